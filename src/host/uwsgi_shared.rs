//! Typed, bounds-checked reads of uWSGI's shared memory (the worker table, cores, apps, caches,
//! spoolers, mules, `uwsgi.shared`).
//!
//! uWSGI allocates these arrays before fork in MAP_SHARED memory and never moves or frees them,
//! and every process of the instance writes its own fields without a lock. A
//! [`SharedSlice`] is the one place that turns such a pointer into reads: an element index is
//! checked against the length, a field is named with [`field!`] (its offset comes from
//! `offset_of!` and its type from the struct, so neither can be wrong), and the value is read
//! with one volatile load of a plain integer. Torn reads across fields are possible and
//! harmless; no pointer a worker can change is ever followed.

use std::marker::PhantomData;

/// Plain integers (and pointers, read as values): any bit pattern is a valid value.
///
/// uWSGI's processes write these fields with plain C stores while we read them, which the
/// Rust (and C11) memory model calls a data race, formally undefined. What is relied on
/// instead is what uWSGI's own stats server relies on: the fields are naturally aligned and at
/// most 8 bytes, which x86-64 and AArch64 load and store in one access, so a read returns
/// the old or the new value, never a mix; the load is volatile, so the compiler emits exactly
/// one load of the full width and cannot cache, split or invent it; and every value read is
/// only copied out (never used as a pointer, length or index), so a stale one costs accuracy,
/// not memory safety.
pub(crate) trait Pod: Copy + private::Sealed {}

mod private {
    pub trait Sealed {}
}

macro_rules! pod {
    ($($t:ty),*) => { $( impl private::Sealed for $t {} impl Pod for $t {} )* };
}
pod!(i8, u8, i16, u16, i32, u32, i64, u64, isize, usize);
impl<T: Pod, const N: usize> private::Sealed for [T; N] {}
impl<T: Pod, const N: usize> Pod for [T; N] {}
impl<T> private::Sealed for *mut T {}
impl<T> Pod for *mut T {}

/// Integer fields, as exported values: negative values of unsigned-meaning counters cannot
/// occur, and values beyond `i64::MAX` saturate.
pub(crate) trait Int: Pod {
    fn saturating_i64(self) -> i64;
}

macro_rules! int {
    ($($t:ty),*) => { $( impl Int for $t {
        fn saturating_i64(self) -> i64 {
            // Only unsigned values can be out of range, and only above.
            i64::try_from(self).unwrap_or(i64::MAX)
        }
    } )* };
}
int!(i8, u8, i16, u16, i32, u32, i64, u64, isize, usize);

/// A field `F` of a struct `T`: its offset, made by [`field!`].
pub(crate) struct Field<T, F> {
    offset: usize,
    _types: PhantomData<fn(&T) -> &F>,
}

impl<T, F> Clone for Field<T, F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, F> Copy for Field<T, F> {}

impl<T, F: Pod> Field<T, F> {
    /// Use [`field!`]: `witness` is never called, it only ties `F` to the field's type.
    #[doc(hidden)]
    pub(crate) const fn new(offset: usize, _witness: fn(&T) -> &F) -> Self {
        Field {
            offset,
            _types: PhantomData,
        }
    }
}

/// `field!(ffi::uwsgi_worker, requests)`: the `requests` field of `uwsgi_worker`;
/// `field!(ffi::uwsgi_core, req.start_of_request)`: a field of a nested struct.
macro_rules! field {
    ($t:ty, $($f:ident).+) => {
        $crate::host::uwsgi_shared::Field::<$t, _>::new(
            std::mem::offset_of!($t, $($f).+),
            |s: &$t| &s.$($f).+,
        )
    };
}
pub(crate) use field;

/// `len` elements of type `T` in uWSGI's shared memory.
pub(crate) struct SharedSlice<T> {
    ptr: *const T,
    len: usize,
}

// SAFETY: the memory is process-global and lives as long as the process; it is only read, by
// volatile loads of Pod fields, which is fine from any thread.
unsafe impl<T> Send for SharedSlice<T> {}
// SAFETY: see Send.
unsafe impl<T> Sync for SharedSlice<T> {}

// A copy is the same handle (no `T: Clone` needed, unlike a derive).
impl<T> Clone for SharedSlice<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedSlice<T> {}

impl<T> SharedSlice<T> {
    pub(crate) const fn empty() -> Self {
        SharedSlice {
            ptr: std::ptr::null(),
            len: 0,
        }
    }

    /// # Safety
    /// `ptr` is NULL (the slice is then empty) or points to `len` initialised, aligned `T`s that
    /// stay mapped for the life of the process.
    pub(crate) unsafe fn new(ptr: *const T, len: usize) -> Self {
        if ptr.is_null() {
            return Self::empty();
        }
        SharedSlice { ptr, len }
    }

    /// Over memory of the process' own that is never freed (tests build worker tables so).
    #[cfg(test)]
    pub(crate) fn from_static(items: &'static [T]) -> Self {
        SharedSlice {
            ptr: items.as_ptr(),
            len: items.len(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Element `i`'s field, or `None` past the end.
    pub(crate) fn read<F: Pod>(&self, i: usize, field: Field<T, F>) -> Option<F> {
        if i >= self.len {
            return None;
        }
        // SAFETY: i < len elements of the allocation (constructor contract).
        let elem = unsafe { self.ptr.add(i) };
        // SAFETY: `field.offset` is `offset_of!` of a field of type F within T (made by
        // `field!`), so the address stays inside the element and is aligned for F.
        let at = unsafe { elem.byte_add(field.offset) }.cast::<F>();
        // SAFETY: `at` is valid for reads (above), and F is Pod: any bits are a valid F. A
        // concurrent plain store by uWSGI is the data race `Pod` describes: one aligned
        // volatile load gives the old or the new value.
        Some(unsafe { at.read_volatile() })
    }
}

/// `n` all-zero worker structs, for tests that build a worker table in local memory.
#[cfg(test)]
pub(crate) fn zeroed_workers(n: usize) -> Vec<crate::ffi::uwsgi_worker> {
    // SAFETY: uwsgi_worker holds integers, pointers and optional function pointers, for all of
    // which all-zero is valid.
    (0..n).map(|_| unsafe { std::mem::zeroed() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    struct W {
        a: u8,
        b: u64,
        c: i32,
        pipe: [i32; 2],
    }

    #[test]
    fn reads_fields_in_bounds_only() {
        let ws = [
            W {
                a: 1,
                b: 2,
                c: -3,
                pipe: [4, 5],
            },
            W {
                a: 6,
                b: u64::MAX,
                c: 8,
                pipe: [9, 10],
            },
        ];
        // SAFETY: a live local array of 2 elements, outliving `s`.
        let s = unsafe { SharedSlice::new(ws.as_ptr(), ws.len()) };
        assert_eq!(s.read(0, field!(W, a)), Some(1));
        assert_eq!(s.read(1, field!(W, b)), Some(u64::MAX));
        assert_eq!(s.read(0, field!(W, c)), Some(-3));
        assert_eq!(s.read(1, field!(W, pipe)), Some([9, 10]));
        assert_eq!(s.read(2, field!(W, a)), None);
        assert_eq!(ws[0].a + ws[1].a, 7);
        // SAFETY: NULL gives the empty slice.
        let e = unsafe { SharedSlice::<W>::new(std::ptr::null(), 5) };
        assert_eq!((e.len(), e.read(0, field!(W, b))), (0, None));
    }
}
