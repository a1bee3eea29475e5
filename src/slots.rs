//! Zeroed tables that are read before they are written: the slots of the in-memory hash maps
//! (the active segment's id map, the stream index's tags) and the key filters' blocks.

/// A vector of `len` copies of `zero` (all-zero bytes), written element by element.
///
/// `vec![zero; len]` asks the allocator for zeroed memory, and a large block comes straight
/// from the kernel, untouched. A hash map probes (reads) a slot before it writes it, and a
/// filter reads a word before it sets a bit in it; the kernel answers the read of an untouched
/// page with its shared zero page, and the write that follows must then replace that mapping,
/// which flushes the page from the TLB of every CPU the process runs on, an interrupt to each.
/// On a virtual machine of two cores that cost a fifth of a durable batch's time (measured: one
/// append of 100 events per sync, where the id map of the active segment grows and is started
/// afresh at each seal). Writing the zeros first makes every page's first touch a write, which
/// needs no flush.
///
/// The zero goes through `black_box`: an allocation followed by a fill of the whole block with
/// a zero the compiler can see may be turned back into the allocator's zeroed allocation.
pub(crate) fn zeroed<T: Copy>(len: usize, zero: T) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.resize(len, std::hint::black_box(zero));
    v
}

#[cfg(test)]
mod tests {
    use super::zeroed;

    #[test]
    fn a_zeroed_table_holds_len_zeros() {
        for len in [0, 1, 1024, 1 << 20] {
            let v = zeroed(len, (0u64, 0u64));
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&s| s == (0, 0)));
        }
        assert_eq!(zeroed(3, [0u32; 8]), vec![[0u32; 8]; 3]);
    }

    /// Every page of a new table is in memory once `zeroed` returns: it was written, not left
    /// for the first probe to map the shared zero page.
    #[cfg(target_os = "linux")]
    #[test]
    fn every_page_of_a_zeroed_table_is_resident() {
        // 32 MiB: far past the allocator's threshold for taking memory straight from the kernel.
        let v = zeroed(1 << 21, (0u64, 0u64));
        // SAFETY: sysconf has no memory arguments.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let start = v.as_ptr() as usize & !(page - 1);
        let end = v.as_ptr() as usize + v.len() * std::mem::size_of::<(u64, u64)>();
        let pages = (end - start).div_ceil(page);
        let mut resident = vec![0u8; pages];
        // SAFETY: `start..start + pages * page` covers the vector's pages, all mapped (the
        // allocation holds them); `resident` has one byte per page, as mincore writes.
        let r = unsafe {
            libc::mincore(
                start as *mut libc::c_void,
                pages * page,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "mincore failed: {}", std::io::Error::last_os_error());
        let missing = resident.iter().filter(|&&b| b & 1 == 0).count();
        assert_eq!(missing, 0, "{missing} of {pages} pages never touched");
        std::hint::black_box(&v);
    }
}
