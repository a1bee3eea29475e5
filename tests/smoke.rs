use eventjournal::*;

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().segment_size(4096);
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        for i in 0..100u64 {
            let s = format!("s-{}", i % 7);
            store
                .append(
                    &s,
                    ExpectedVersion::Any,
                    [EventData::new("T", vec![i as u8; 50])],
                )
                .unwrap();
        }
        let all: Vec<_> = store
            .read_all_forward(Position::START, usize::MAX)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(all.len(), 100);
        let back: Vec<_> = store
            .read_all_backward(Position::END, usize::MAX)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back.len(), 100);
        assert_eq!(store.stream_version("s-0"), Some(14));
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.stream_version("s-0"), Some(14));
    let ev: Vec<_> = store
        .read_stream_forward("s-3", 0, 100)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(ev.len(), 14);
    assert_eq!(
        store
            .read_all_forward(Position::START, usize::MAX)
            .unwrap()
            .count(),
        100
    );
}
