//! End-to-end tests: the pipeline runner as a process (kills, concurrent
//! runs, corrupt files) and the smoke pipeline. The tests are in `tests/`.
