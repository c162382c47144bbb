//! A gzip answer, streamed: the exposition is compressed a slice at a time as the client's
//! socket drains, within each cycle's compression budget, so a large answer to a slow client
//! neither stalls the master nor holds a whole compressed copy.

use metrics_prometheus_engine::compress::Gzip;

use super::budget::Budget;

/// Compressor states kept for reuse (each holds the deflate window and hash tables).
const SPARE_GZIPS: usize = 2;

/// Compressors of finished answers, for the next gzip answer.
#[derive(Default)]
pub(super) struct Compressors(Vec<Gzip>);

impl Compressors {
    fn take(&mut self) -> Gzip {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps a compressor for the next gzip answer (up to [`SPARE_GZIPS`]).
    pub(super) fn keep(&mut self, gz: Option<Gzip>) {
        if let Some(gz) = gz.filter(|_| self.0.len() < SPARE_GZIPS) {
            self.0.push(gz);
        }
    }

    /// Drops them all (the server is idle: [`super::Server::release_memory`]).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// One connection's gzip body in progress.
#[derive(Default)]
pub(super) struct Stream {
    /// The uncompressed exposition, compressed a slice at a time from `pos` as the socket
    /// drains.
    body: Vec<u8>,
    pos: usize,
    gz: Option<Gzip>,
}

impl Stream {
    /// Starts compressing `exposition`: the gzip header goes into `out` (after the response
    /// head). The body buffer comes from `spare` (the connections' spare buffers).
    pub(super) fn start(
        &mut self,
        exposition: &[u8],
        out: &mut Vec<u8>,
        spare: &mut Vec<Vec<u8>>,
        compressors: &mut Compressors,
    ) {
        // The connection keeps a copy of the exposition (a memcpy, a fraction of the
        // compression's cost) to compress as the socket drains; the render buffer stays with
        // the scratch, so steady scrapes keep allocating nothing.
        if self.body.capacity() == 0 {
            self.body = spare.pop().unwrap_or_default();
        }
        self.body.clear();
        self.body.extend_from_slice(exposition);
        self.pos = 0;
        let mut gz = compressors.take();
        gz.begin(out);
        self.gz = Some(gz);
    }

    /// Some of the body is still to compress (or the stream to finish).
    pub(super) fn is_active(&self) -> bool {
        self.gz.is_some()
    }

    /// Compresses the next slice, as much as `budget` allows, into `out`; after the last one,
    /// ends the stream and keeps its compressor.
    pub(super) fn compress_next(
        &mut self,
        out: &mut Vec<u8>,
        budget: &mut Budget,
        compressors: &mut Compressors,
    ) {
        let Some(gz) = self.gz.as_mut() else {
            return;
        };
        let take = budget.take_gzip(self.body.len() - self.pos);
        gz.write(&self.body[self.pos..self.pos + take], out);
        self.pos += take;
        if self.pos == self.body.len() {
            gz.finish(out);
            compressors.keep(self.gz.take());
        }
    }

    /// The body buffer and the compressor of an answer cut short, for reuse.
    pub(super) fn into_parts(self) -> (Vec<u8>, Option<Gzip>) {
        (self.body, self.gz)
    }
}
