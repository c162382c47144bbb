//! The tokens of the server's epoll, defined once: `kind << 32 | index`, so that one event
//! names what woke it (a connection slot, a listener, a vassal fetch, the round's timer).

/// What an event of the server's epoll is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Token {
    /// A connection, by its slot in `Server::conns`.
    Conn(usize),
    /// A listener, by its index in `Server::listeners`.
    Listener(usize),
    /// A vassal's fetch, by its index in the gather round.
    Vassal(usize),
    /// The gather round's deadline timer.
    Timer,
}

const CONN: u64 = 0;
const LISTENER: u64 = 1;
const VASSAL: u64 = 2;
const TIMER: u64 = 3;
const INDEX: u64 = 0xffff_ffff;

impl Token {
    /// The `u64` registered with epoll. Indexes are far below 2^32 (the server's slots, at most
    /// `gather::MAX_FETCHES` vassals), so the kind is never overwritten.
    pub(super) fn raw(self) -> u64 {
        let (kind, index) = match self {
            Token::Conn(i) => (CONN, i),
            Token::Listener(i) => (LISTENER, i),
            Token::Vassal(i) => (VASSAL, i),
            Token::Timer => (TIMER, 0),
        };
        kind << 32 | (index as u64 & INDEX)
    }

    /// The token an event carries; `None` for a kind the server never registers.
    pub(super) fn from_raw(raw: u64) -> Option<Token> {
        let index = (raw & INDEX) as usize;
        match raw >> 32 {
            CONN => Some(Token::Conn(index)),
            LISTENER => Some(Token::Listener(index)),
            VASSAL => Some(Token::Vassal(index)),
            TIMER => Some(Token::Timer),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn tokens_round_trip_and_keep_their_values() {
        for t in [
            Token::Conn(0),
            Token::Conn(79),
            Token::Listener(0),
            Token::Listener(15),
            Token::Vassal(0),
            Token::Vassal(1023),
            Token::Timer,
        ] {
            assert_eq!(Token::from_raw(t.raw()), Some(t));
        }
        // The values registered before the tokens had one definition.
        assert_eq!(Token::Conn(5).raw(), 5);
        assert_eq!(Token::Listener(3).raw(), 1 << 32 | 3);
        assert_eq!(Token::Vassal(7).raw(), 2 << 32 | 7);
        assert_eq!(Token::Timer.raw(), 3 << 32);
        assert_eq!(Token::from_raw(4 << 32), None);
    }
}
