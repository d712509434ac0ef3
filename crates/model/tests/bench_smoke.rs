//! The benchmarks run end to end on a tiny configuration (no timing is asserted).

#[test]
fn bench_runs_and_reports_every_figure() {
    let r = model::bench::run(&model::bench::BenchConfig::smoke()).unwrap();
    assert!(r.gemm_square.gflops > 0.0 && r.gemm_model.gflops > 0.0);
    assert!(r.train_tokens_per_s > 0.0 && r.mfu > 0.0 && r.train_flops_per_token > 0.0);
    assert_eq!(r.decode.iter().map(|d| d.batch).collect::<Vec<_>>(), vec![1, 3]);
    assert!(r.decode.iter().all(|d| d.tokens_per_s > 0.0));
    let text = r.to_string();
    assert!(text.contains("MFU") && text.contains("decode batch"), "{text}");
}
