//! The one unsafe operation of the server: a positioned read into a buffer that is not zeroed first.
//!
//! A region's input is read straight into the tensor's new buffer. Zeroing that buffer before the read would cost
//! as much as a third of the copy itself (600 KB of memset for a 224x224 image), so the read fills the vector's
//! unused capacity and the length is set to what the kernel wrote.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Reads exactly `len` bytes at `offset` of `file` into a new vector; a file that ends first is `UnexpectedEof`.
pub fn read_exact_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buffer: Vec<u8> = Vec::with_capacity(len);
    while buffer.len() < len {
        let filled = buffer.len();
        let at = offset
            .checked_add(filled as u64)
            .and_then(|at| libc::off_t::try_from(at).ok())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let spare = &mut buffer.spare_capacity_mut()[..len - filled];
        // SAFETY: `spare` is the vector's unused capacity, valid for writes of `spare.len()` bytes and referenced by
        // nothing else while the call runs; pread writes at most that many bytes into it, and `file` keeps the
        // descriptor open for the whole call.
        let read = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match read {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => {
                // SAFETY: pread initialised the first `n` bytes of the spare capacity, and `n <= spare.len()`, so
                // the new length covers initialised bytes only and stays within the capacity.
                unsafe { buffer.set_len(filled + n as usize) };
            }
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_window_and_refuses_to_read_past_the_end() {
        let path = std::env::temp_dir().join(format!("infergate-read-{}", std::process::id()));
        std::fs::write(&path, (0u8..=255).collect::<Vec<u8>>()).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(read_exact_at(&file, 10, 4).unwrap(), [10, 11, 12, 13]);
        assert_eq!(read_exact_at(&file, 0, 0).unwrap(), Vec::<u8>::new());
        assert_eq!(read_exact_at(&file, 250, 10).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read_exact_at(&file, u64::MAX, 1).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        std::fs::remove_file(path).unwrap();
    }
}
