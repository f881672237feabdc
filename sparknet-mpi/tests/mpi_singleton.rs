//! The MPI backend as a job of one rank (singleton init, no `mpirun`): every collective and the
//! averager run through the real MPI calls. MPI can be initialised once per process, so this file
//! holds a single test. Multi-rank runs are the `mpi_*` examples (`cargo xtask mpi-test`).

use sparknet_mpi::{Averager, Collective, Error, MpiComm};

fn pattern(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i as f32) * 0.618_034).sin() * 10f32.powi((i % 13) as i32 - 6)).collect()
}

#[test]
fn singleton_job_runs_every_collective() {
    let comm = MpiComm::init().expect("MPI singleton init");
    assert_eq!((comm.rank(), comm.size()), (0, 1));
    assert!(matches!(MpiComm::init(), Err(Error::MpiInit(_))), "MPI initialises only once");

    let original = pattern(100_003);

    let mut w = original.clone();
    comm.all_reduce_sum(&mut w).unwrap();
    assert_eq!(w, original, "sum over one rank");
    comm.all_reduce_mean(&mut w).unwrap();
    assert!(w.iter().zip(&original).all(|(a, b)| a.to_bits() == b.to_bits()), "mean over one rank");

    let mut w64: Vec<f64> = original.iter().map(|&x| f64::from(x) / 3.0).collect();
    let before = w64.clone();
    comm.all_reduce_sum_f64(&mut w64).unwrap();
    assert_eq!(w64, before);

    comm.broadcast(&mut w, 0).unwrap();
    assert_eq!(w, original);
    let mut bytes = *b"abc";
    comm.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(&bytes, b"abc");
    assert!(matches!(
        comm.broadcast(&mut w, 1),
        Err(Error::RootOutOfRange { op: "broadcast", root: 1, size: 1 })
    ));
    assert!(matches!(comm.gather_f64(&[1.0], 2), Err(Error::RootOutOfRange { .. })));

    comm.barrier().unwrap();
    assert_eq!(comm.gather_f64(&[1.0, 2.5], 0).unwrap(), Some(vec![1.0, 2.5]));

    // Averaging one replica is the identity, bit for bit (prescaled: 1 / K = 1).
    let mut averager = Averager::new();
    let stats = averager.average(&comm, &mut w).unwrap();
    assert_eq!(stats.elements, original.len());
    assert!(w.iter().zip(&original).all(|(a, b)| a.to_bits() == b.to_bits()));

    let stats = averager.average_prescaled(&comm, &mut w).unwrap();
    assert_eq!(stats.elements, original.len());
    assert!(w.iter().zip(&original).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(!sparknet_mpi::mpi_in_place().is_null());
}
