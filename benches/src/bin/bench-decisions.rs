//! The deterministic twin of the criterion benchmark `decision`: `bench-decisions MODE KIND K`
//! makes K decisions of one kind (`floodgate_bench::core_work::kinds`), MODE `bare` (one
//! `ClientState`) or `store` (a `MemoryStore` with 10,000 tracked clients taking turns).
//! Run under callgrind for two values of K, the difference of the instruction counts over
//! the difference of K is the cost of one decision (benches/core-instructions.sh does this).

use std::process::ExitCode;

use floodgate::ClientState;
use floodgate_bench::core_work::{bare_op, filled_store, kinds, store_op, FILL_ROUNDS, T0};
use floodgate_bench::DISTINCT_IPS;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(kind), Some(k)) = (
        args.first(),
        args.get(1),
        args.get(2).and_then(|k| k.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: bench-decisions bare|store KIND K");
        return ExitCode::from(2);
    };
    let Some((_, work)) = kinds().into_iter().find(|(name, _)| name == kind) else {
        let names: Vec<_> = kinds().into_iter().map(|(n, _)| n).collect();
        eprintln!("unknown kind {kind:?}; one of {names:?}");
        return ExitCode::from(2);
    };
    match mode.as_str() {
        "bare" => {
            let mut state = ClientState::new();
            let mut now = T0;
            // Bring the state to its steady size first (a full log), in both runs alike.
            for _ in 0..1_000 {
                bare_op(&mut state, &work, &mut now);
            }
            for _ in 0..k {
                bare_op(&mut state, &work, &mut now);
            }
        }
        "store" => {
            let (store, keys) = filled_store(&work, 1);
            let first = FILL_ROUNDS * u64::from(DISTINCT_IPS);
            for op in first..first + k {
                store_op(&store, &work, &keys[0], op);
            }
        }
        _ => {
            eprintln!("unknown mode {mode:?}; bare or store");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
