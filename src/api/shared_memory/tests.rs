use std::path::PathBuf;

use super::*;

/// A shared-memory object of `len` bytes, removed on drop.
struct Object {
    key: String,
    path: PathBuf,
}

impl Object {
    /// A name in /dev/shm, not created yet.
    fn name(tag: &str) -> Object {
        let key = format!("/infergate-unit-{tag}-{}", std::process::id());
        let path = PathBuf::from(SHM_DIR).join(&key[1..]);
        Object { key, path }
    }

    fn new(tag: &str, contents: &[u8]) -> Object {
        let object = Object::name(tag);
        std::fs::write(&object.path, contents).expect("/dev/shm is writable");
        object
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn floats(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn at(region: &str, offset: u64, byte_size: u64) -> SharedRef {
    SharedRef { region: region.into(), offset, byte_size }
}

#[test]
fn an_input_is_read_from_its_window_and_an_output_written_into_one() {
    let mut contents = vec![0u8; 8];
    contents.extend(floats(&[1.0, 2.0, 3.0, 4.0]));
    contents.extend(vec![0u8; 16]);
    let object = Object::new("rw", &contents);
    let shm = SharedMemory::new(true, 1 << 20);
    shm.register("r", &object.key, 8, 32).unwrap();
    let input = shm.read_input("x".into(), DataType::Fp32, vec![2, 2], &at("r", 0, 16)).unwrap();
    assert_eq!(input.tensor.data().as_ref(), floats(&[1.0, 2.0, 3.0, 4.0]));

    let target = shm.output_target("y".into(), &at("r", 16, 16)).unwrap();
    let output = Tensor::new(DataType::Fp32, vec![2], Bytes::from(floats(&[5.0, 6.0]))).unwrap();
    target.write(&output).unwrap();
    let written = std::fs::read(&object.path).unwrap();
    assert_eq!(&written[24..32], floats(&[5.0, 6.0]));

    let too_big = Tensor::new(DataType::Fp32, vec![5], Bytes::from(floats(&[0.0; 5]))).unwrap();
    assert!(matches!(target.write(&too_big), Err(ApiError::InvalidInput(_))));
}

#[test]
fn windows_past_the_region_and_sizes_that_do_not_fit_the_shape_are_refused() {
    let object = Object::new("bounds", &[0u8; 64]);
    let shm = SharedMemory::new(true, 1 << 20);
    let err = shm.register("r", &object.key, 32, 64).unwrap_err();
    assert!(err.to_string().contains("past the end of shared memory key"), "{err}");
    assert!(matches!(shm.register("r", &object.key, u64::MAX, 2), Err(ApiError::InvalidInput(_))));
    assert!(matches!(shm.register("r", &object.key, 0, 0), Err(ApiError::InvalidInput(_))));
    shm.register("r", &object.key, 0, 32).unwrap();
    let err = shm.read_input("x".into(), DataType::Fp32, vec![4], &at("r", 24, 16)).unwrap_err();
    assert!(err.to_string().contains("past the end of region 'r' (32 bytes)"), "{err}");
    assert!(shm.read_input("x".into(), DataType::Fp32, vec![4], &at("r", u64::MAX, 16)).is_err());
    let err = shm.read_input("x".into(), DataType::Fp32, vec![4], &at("r", 0, 12)).unwrap_err();
    assert!(err.to_string().contains("needs 16 bytes but 12 were given"), "{err}");
    assert!(shm.output_target("y".into(), &at("r", 30, 4)).is_err());
    let unknown = shm.read_input("x".into(), DataType::Fp32, vec![1], &at("nope", 0, 4)).unwrap_err();
    assert_eq!(unknown.to_string(), "input 'x': no system shared memory region named 'nope' is registered");

    let bounded = SharedMemory::new(true, 8);
    bounded.register("r", &object.key, 0, 32).unwrap();
    let err = bounded.read_input("x".into(), DataType::Fp32, vec![4], &at("r", 0, 16)).unwrap_err();
    assert!(matches!(err, ApiError::LimitExceeded(_)), "{err}");
}

#[test]
fn a_region_unregistered_or_unlinked_in_use_stays_usable_until_the_request_ends() {
    let object = Object::new("held", &floats(&[7.0, 8.0]));
    let shm = SharedMemory::new(true, 1 << 20);
    shm.register("r", &object.key, 0, 8).unwrap();
    let target = shm.output_target("y".into(), &at("r", 0, 8)).unwrap();
    shm.unregister(Some("r")).unwrap();
    std::fs::remove_file(&object.path).unwrap();
    let output = Tensor::new(DataType::Fp32, vec![1], Bytes::from(floats(&[9.0]))).unwrap();
    target.write(&output).unwrap();
    assert!(shm.read_input("x".into(), DataType::Fp32, vec![1], &at("r", 0, 4)).is_err());
    shm.unregister(Some("r")).unwrap();
}

#[test]
fn a_truncated_object_is_the_clients_error() {
    let object = Object::new("truncated", &[0u8; 64]);
    let shm = SharedMemory::new(true, 1 << 20);
    shm.register("r", &object.key, 0, 64).unwrap();
    std::fs::OpenOptions::new().write(true).open(&object.path).unwrap().set_len(8).unwrap();
    let err = shm.read_input("x".into(), DataType::Uint8, vec![64], &at("r", 0, 64)).unwrap_err();
    assert!(err.to_string().contains("shorter than when it was registered"), "{err}");
    let target = shm.output_target("y".into(), &at("r", 0, 64)).unwrap();
    let output = Tensor::new(DataType::Uint8, vec![16], Bytes::from(vec![1u8; 16])).unwrap();
    assert!(target.write(&output).is_err());
    assert_eq!(std::fs::metadata(&object.path).unwrap().len(), 8, "a write never grows the object");
}

#[test]
fn links_other_files_and_paths_out_of_dev_shm_are_refused() {
    let object = Object::new("target", &[0u8; 8]);
    let link = Object::name("link");
    std::os::unix::fs::symlink(&object.path, &link.path).unwrap();
    let dir = Object::name("dir");
    std::fs::create_dir(&dir.path).unwrap();
    let fifo = Object::name("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo.path).status().expect("mkfifo runs");
    assert!(made.success());
    let shm = SharedMemory::new(true, 1 << 20);
    for key in
        [link.key.as_str(), dir.key.as_str(), fifo.key.as_str(), "/../etc/passwd", "/a/b", "/", "/no-such-object-here"]
    {
        assert!(matches!(shm.register("r", key, 0, 4), Err(ApiError::InvalidInput(_))), "{key}");
    }
    std::fs::remove_dir(&dir.path).unwrap();
    assert!(shm.status(None).unwrap().is_empty());
}

#[test]
fn registration_status_and_removal() {
    let object = Object::new("status", &[0u8; 16]);
    let shm = SharedMemory::new(true, 1 << 20);
    shm.register("b", &object.key, 4, 8).unwrap();
    shm.register("a", &object.key, 0, 16).unwrap();
    assert!(shm.register("a", &object.key, 0, 16).unwrap_err().to_string().contains("already registered"));
    assert!(shm.register("", &object.key, 0, 16).is_err());
    let names: Vec<String> = shm.status(None).unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        shm.status(Some("b")).unwrap(),
        [RegionStatus { name: "b".into(), key: object.key.clone(), offset: 4, byte_size: 8 }]
    );
    assert!(matches!(shm.status(Some("c")), Err(ApiError::NotFound(_))));
    shm.unregister(Some("b")).unwrap();
    shm.unregister(Some("b")).unwrap();
    assert_eq!(shm.status(None).unwrap().len(), 1);
    shm.unregister(None).unwrap();
    assert!(shm.status(None).unwrap().is_empty());
}

#[test]
fn everything_is_refused_while_the_extension_is_off() {
    let object = Object::new("off", &[0u8; 16]);
    let shm = SharedMemory::new(false, 1 << 20);
    assert!(matches!(shm.register("a", &object.key, 0, 16), Err(ApiError::Forbidden(_))));
    assert!(matches!(shm.status(None), Err(ApiError::Forbidden(_))));
    assert!(matches!(shm.unregister(None), Err(ApiError::Forbidden(_))));
    assert!(matches!(
        shm.read_input("x".into(), DataType::Uint8, vec![1], &at("a", 0, 1)),
        Err(ApiError::Forbidden(_))
    ));
}

#[test]
fn parameters_name_a_region_with_a_size() {
    assert_eq!(SharedRef::from_parameters(("input", "x"), None, None, None).unwrap(), None);
    assert_eq!(
        SharedRef::from_parameters(("input", "x"), Some("r".into()), None, Some(4)).unwrap(),
        Some(at("r", 0, 4))
    );
    assert!(SharedRef::from_parameters(("input", "x"), Some("r".into()), Some(4), None).is_err());
    assert!(SharedRef::from_parameters(("input", "x"), None, Some(4), Some(4)).is_err());
    assert!(SharedRef::from_parameters(("input", "x"), None, Some(4), None).is_err());
}
