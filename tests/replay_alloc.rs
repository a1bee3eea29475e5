//! The replay path allocates nothing per event: counted with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use eventjournal::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(|c| c.get());
    f();
    ALLOCS.with(|c| c.get()) - before
}

#[test]
fn replay_allocates_per_read_not_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    // Fresh ids each time: the same batch again would be an idempotent retry.
    let batch = || (0..100).map(|i| EventData::new("Deposited", vec![i as u8; 100]));
    for _ in 0..100 {
        s.append("account-1", ExpectedVersion::Any, batch())
            .unwrap();
        s.append("account-2", ExpectedVersion::Any, batch())
            .unwrap();
    }
    for n in [100usize, 10_000] {
        let mut total = 0usize;
        let stream_allocs = allocations_during(|| {
            for e in s.read_stream_forward("account-1", 0, n).unwrap() {
                total += e.unwrap().data().len();
            }
        });
        assert_eq!(total, n * 100);
        let mut count = 0usize;
        let all_allocs = allocations_during(|| {
            for e in s.read_all_forward(Position::START, n).unwrap() {
                count += e.unwrap().data().len();
            }
        });
        assert_eq!(count, n * 100);
        // A handful per read call (the snapshot and the position buffer), none per event.
        assert!(
            stream_allocs <= 4,
            "{stream_allocs} allocations for {n} events"
        );
        assert!(all_allocs <= 4, "{all_allocs} allocations for {n} events");
    }
}

#[test]
fn replay_with_a_closure_allocates_per_call_not_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
    let batch = || (0..100).map(|i| EventData::new("Deposited", vec![i as u8; 100]));
    for _ in 0..100 {
        s.append("account-1", ExpectedVersion::Any, batch())
            .unwrap();
    }
    let mut total = 0usize;
    let stream_allocs = allocations_during(|| {
        s.replay_stream("account-1", 0, |e| {
            total += e.data().len();
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    });
    assert_eq!(total, 10_000 * 100);
    let mut count = 0usize;
    let all_allocs = allocations_during(|| {
        s.replay_all(Position::START, |e| {
            count += e.data().len();
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    });
    assert_eq!(count, 10_000 * 100);
    assert!(stream_allocs <= 4, "{stream_allocs} allocations");
    assert!(all_allocs <= 4, "{all_allocs} allocations");
}
