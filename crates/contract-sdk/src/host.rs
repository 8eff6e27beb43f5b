//! The host calls: the real imports on wasm32, a thread-local mock natively.

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "phala_v1")]
    extern "C" {
        pub fn input_len() -> i32;
        pub fn input_read(dst: *mut u8);
        pub fn output_write(ptr: *const u8, len: i32);
        pub fn fail(ptr: *const u8, len: i32);
        pub fn storage_get(key: *const u8, key_len: i32, dst: *mut u8, cap: i32) -> i64;
        pub fn storage_set(key: *const u8, key_len: i32, value: *const u8, value_len: i32);
        pub fn storage_remove(key: *const u8, key_len: i32);
        pub fn caller(dst: *mut u8);
        pub fn contract_id(dst: *mut u8);
        pub fn block_height() -> i64;
        pub fn block_time() -> i64;
        pub fn random(dst: *mut u8, len: i32);
        pub fn emit_event(ptr: *const u8, len: i32);
        pub fn send_message(topic: *const u8, topic_len: i32, ptr: *const u8, len: i32);
        pub fn log(ptr: *const u8, len: i32);
    }
}

#[cfg(target_arch = "wasm32")]
mod real {
    use super::imports as raw;
    use crate::Address;

    pub fn input() -> Vec<u8> {
        unsafe {
            let mut buffer = vec![0u8; raw::input_len().max(0) as usize];
            raw::input_read(buffer.as_mut_ptr());
            buffer
        }
    }

    pub fn output(bytes: &[u8]) {
        unsafe { raw::output_write(bytes.as_ptr(), bytes.len() as i32) }
    }

    pub fn fail(message: &str) -> ! {
        unsafe {
            raw::fail(message.as_ptr(), message.len() as i32);
            core::arch::wasm32::unreachable()
        }
    }

    pub fn storage_get(key: &[u8]) -> Option<Vec<u8>> {
        let mut buffer = vec![0u8; 256];
        loop {
            let len = unsafe {
                raw::storage_get(
                    key.as_ptr(),
                    key.len() as i32,
                    buffer.as_mut_ptr(),
                    buffer.len() as i32,
                )
            };
            if len < 0 {
                return None;
            }
            let len = len as usize;
            if len <= buffer.len() {
                buffer.truncate(len);
                return Some(buffer);
            }
            buffer = vec![0u8; len];
        }
    }

    pub fn storage_set(key: &[u8], value: &[u8]) {
        unsafe {
            raw::storage_set(
                key.as_ptr(),
                key.len() as i32,
                value.as_ptr(),
                value.len() as i32,
            )
        }
    }

    pub fn storage_remove(key: &[u8]) {
        unsafe { raw::storage_remove(key.as_ptr(), key.len() as i32) }
    }

    pub fn caller() -> Address {
        let mut out = [0u8; 32];
        unsafe { raw::caller(out.as_mut_ptr()) };
        out
    }

    pub fn contract_id() -> Address {
        let mut out = [0u8; 32];
        unsafe { raw::contract_id(out.as_mut_ptr()) };
        out
    }

    pub fn block_height() -> u64 {
        unsafe { raw::block_height() as u64 }
    }

    pub fn block_time() -> u64 {
        unsafe { raw::block_time() as u64 }
    }

    pub fn random(out: &mut [u8]) {
        unsafe { raw::random(out.as_mut_ptr(), out.len() as i32) }
    }

    pub fn emit_event(bytes: &[u8]) {
        unsafe { raw::emit_event(bytes.as_ptr(), bytes.len() as i32) }
    }

    pub fn send_message(topic: &[u8], payload: &[u8]) {
        unsafe {
            raw::send_message(
                topic.as_ptr(),
                topic.len() as i32,
                payload.as_ptr(),
                payload.len() as i32,
            )
        }
    }

    pub fn log(line: &str) {
        unsafe { raw::log(line.as_ptr(), line.len() as i32) }
    }
}

#[cfg(target_arch = "wasm32")]
pub use real::*;

#[cfg(not(target_arch = "wasm32"))]
pub use crate::testing::host::*;
