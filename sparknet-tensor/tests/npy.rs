//! `.npy` round trips, byte-level checks against numpy's layout, rejection of what is not
//! supported, and reading the real golden files when they are present.

use sparknet_tensor::npy::{decode_npy, decode_npy_dyn, encode_npy};
use sparknet_tensor::{DType, DynTensor, Error, Tensor, read_npy, write_npy};

/// The header numpy writes for `np.save(f, np.zeros((2, 3), np.float32))` (format 1.0).
const NUMPY_HEADER_2X3_F4: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }                                                          \n";

fn raw(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.push(version);
    out.push(0);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn encode_matches_numpy_bytes() {
    let t = Tensor::<f32>::from_vec(vec![0., 1., 2., 3., 4., 5.], &[2, 3]).unwrap();
    let bytes = encode_npy(&t);
    let data: Vec<u8> = t.to_vec().iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(bytes, raw(1, NUMPY_HEADER_2X3_F4, &data));
    assert_eq!((bytes.len() - data.len()) % 64, 0);
}

#[test]
fn round_trip_every_dtype_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = Tensor::<f32>::arange(24).unwrap().reshape(&[2, 3, 4]).unwrap();
    let d = Tensor::<f64>::from_vec(vec![-1.5, f64::MAX, 1e-300], &[3]).unwrap();
    let u = Tensor::<u8>::arange(256).unwrap().reshape(&[16, 16]).unwrap();
    let i = Tensor::<i32>::from_vec(vec![i32::MIN, -1, 0, i32::MAX], &[1, 4]).unwrap();
    let s = Tensor::scalar(2.5f32);
    write_npy(dir.path().join("f.npy"), &f).unwrap();
    write_npy(dir.path().join("d.npy"), &d).unwrap();
    write_npy(dir.path().join("u.npy"), &u).unwrap();
    write_npy(dir.path().join("i.npy"), &i).unwrap();
    s.write_npy(dir.path().join("s.npy")).unwrap();
    assert_eq!(read_npy::<f32>(dir.path().join("f.npy")).unwrap(), f);
    assert_eq!(read_npy::<f64>(dir.path().join("d.npy")).unwrap(), d);
    assert_eq!(read_npy::<u8>(dir.path().join("u.npy")).unwrap(), u);
    assert_eq!(Tensor::<i32>::read_npy(dir.path().join("i.npy")).unwrap(), i);
    assert_eq!(read_npy::<f32>(dir.path().join("s.npy")).unwrap(), s);
}

#[test]
fn views_are_written_in_c_order() {
    let t = Tensor::<i32>::arange(6).unwrap().reshape(&[2, 3]).unwrap().transpose(0, 1).unwrap();
    let back: Tensor<i32> = decode_npy(&encode_npy(&t)).unwrap();
    assert!(back.is_contiguous());
    assert_eq!(back.to_vec(), [0, 3, 1, 4, 2, 5]);
}

#[test]
fn dynamic_reads_report_the_stored_type() {
    let u = Tensor::<u8>::from_vec(vec![1, 2, 3], &[3]).unwrap();
    let dynamic = decode_npy_dyn(&encode_npy(&u)).unwrap();
    assert_eq!(dynamic.dtype(), DType::U8);
    assert_eq!(dynamic.shape(), &[3]);
    assert_eq!(dynamic, DynTensor::U8(u.clone()));
    let err = decode_npy::<f32>(&encode_npy(&u)).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, found: DType::U8, .. }));
}

#[test]
fn version_2_headers_and_1d_shapes_read() {
    let header = "{'descr':'<i4','fortran_order':False,'shape':(3,)}\n";
    let data: Vec<u8> = [7i32, -8, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    let t: Tensor<i32> = decode_npy(&raw(2, header, &data)).unwrap();
    assert_eq!(t.to_vec(), [7, -8, 9]);
}

#[test]
fn unsupported_and_broken_files_are_errors() {
    let data = vec![0u8; 24];
    let fortran = NUMPY_HEADER_2X3_F4.replace("False", "True ");
    let err = decode_npy::<f32>(&raw(1, &fortran, &data)).unwrap_err();
    assert!(err.to_string().contains("Fortran-order arrays are not supported"), "{err}");
    let big = NUMPY_HEADER_2X3_F4.replace("<f4", ">f4");
    let err = decode_npy::<f32>(&raw(1, &big, &data)).unwrap_err();
    assert!(err.to_string().contains("unsupported dtype '>f4'"), "{err}");
    let err = decode_npy::<f32>(&raw(1, NUMPY_HEADER_2X3_F4, &data[..20])).unwrap_err();
    assert!(err.to_string().contains("data holds 20 bytes"), "{err}");
    let err = decode_npy::<f32>(b"PK\x03\x04 not numpy").unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    let err = decode_npy::<f32>(&raw(1, "{'descr': '<f4', 'shape': (2, 3)}\n", &data)).unwrap_err();
    assert!(err.to_string().contains("fortran_order"), "{err}");
    let mut cut = raw(1, NUMPY_HEADER_2X3_F4, &data);
    cut.truncate(40);
    assert!(matches!(decode_npy::<f32>(&cut), Err(Error::Npy { .. })));
    let err = read_npy::<f32>("/nonexistent/sparknet.npy").unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/sparknet.npy:"), "{err}");
}

#[test]
fn reads_the_reference_golden_files() {
    let Some(reference) = sparknet_testkit::reference_dir("npy_reads_reference") else { return };
    let case = reference.join("forward/cifar10_full");
    let input = read_npy::<f32>(case.join("input_data.npy")).unwrap();
    assert_eq!(input.shape(), &[100, 3, 32, 32]);
    let prob = read_npy::<f32>(case.join("out_prob.npy")).unwrap();
    assert_eq!(prob.shape(), &[100, 10]);
    // Softmax rows sum to one: a check that the float payload decoded correctly.
    let sums = prob.sum(1).unwrap();
    assert!(sums.approx_eq(&Tensor::ones(&[100]).unwrap(), 1e-4), "{sums}");
    // Every golden file in the tree parses as some supported type with a consistent size.
    let forward = reference.join("forward");
    let mut count = 0;
    for case in std::fs::read_dir(&forward).unwrap() {
        for file in std::fs::read_dir(case.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "npy") {
                let t = sparknet_tensor::npy::read_npy_dyn(&path).unwrap();
                assert_eq!(t.dtype(), DType::F32, "{}", path.display());
                count += 1;
            }
        }
    }
    assert!(count > 0);
}
