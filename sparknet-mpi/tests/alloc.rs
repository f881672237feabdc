//! Averaging rounds allocate nothing: a counting global allocator (per thread) around each round
//! after the first, on every worker of in-process groups of 1 to 4.

use sparknet_mpi::{Averager, Collective, LocalGroup};

use sparknet_testkit::alloc::{CountingAllocator, thread_allocations as allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn averaging_rounds_allocate_nothing() {
    for k in 1..=4 {
        let counts = LocalGroup::new(k)
            .unwrap()
            .run(|comm| {
                let mut params = vec![comm.rank() as f32; 50_000];
                let mut hist = vec![2.0f32; 50_000];
                let mut averager = Averager::new();
                let mut counted = Vec::new();
                for round in 0..5 {
                    let before = allocations();
                    averager.average(&comm, &mut params)?;
                    averager.average_prescaled(&comm, &mut params)?;
                    averager.average(&comm, &mut hist)?;
                    comm.all_reduce_sum(&mut hist)?;
                    comm.barrier()?;
                    let after = allocations();
                    if round > 0 {
                        counted.push(after - before);
                    }
                }
                Ok::<_, sparknet_mpi::Error>(counted)
            })
            .unwrap();
        for (rank, c) in counts.into_iter().enumerate() {
            assert_eq!(c.unwrap(), [0; 4], "K={k} rank {rank}: allocations per round");
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let before = allocations();
    let v: Vec<u64> = std::hint::black_box(vec![1, 2, 3]);
    assert!(allocations() > before, "{v:?}");
}
