//! Compute kernels with no dependencies: the same file is compiled into the `kernel` contract
//! and natively into the VM benchmark (`crates/vm/benches/kernel.rs`), so their ratio measures
//! the VM and nothing else.

/// Multiplies two pseudo-random n×n matrices of u32 (wrapping) and folds the product into one
/// word: the dense, cache-friendly arithmetic of a small matrix multiply.
pub fn matmul(n: usize) -> u32 {
    let a: Vec<u32> = (0..n * n).map(|i| fill(i as u32, 0x9e37_79b9)).collect();
    let b: Vec<u32> = (0..n * n).map(|i| fill(i as u32, 0x85eb_ca6b)).collect();
    let mut product = vec![0u32; n * n];
    for i in 0..n {
        for k in 0..n {
            let left = a[i * n + k];
            let row = &b[k * n..k * n + n];
            let out = &mut product[i * n..i * n + n];
            for (cell, right) in out.iter_mut().zip(row) {
                *cell = cell.wrapping_add(left.wrapping_mul(*right));
            }
        }
    }
    product
        .iter()
        .fold(0u32, |acc, cell| acc.rotate_left(5) ^ cell)
}

/// Mixes `rounds` passes over the whole 8-byte words of a buffer of `len` bytes through a 64-bit multiply-xorshift
/// chain: serial, branch-free integer work like a non-cryptographic hash.
pub fn mix(len: usize, rounds: u32) -> u64 {
    let buffer: Vec<u8> = (0..len)
        .map(|i| fill(i as u32, 0xc2b2_ae35) as u8)
        .collect();
    let mut state = 0x243f_6a88_85a3_08d3u64;
    for round in 0..rounds {
        state ^= u64::from(round);
        for chunk in buffer.chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            state ^= u64::from_le_bytes(word);
            state = state.wrapping_mul(0xff51_afd7_ed55_8ccd);
            state ^= state >> 33;
        }
    }
    state
}

fn fill(index: u32, salt: u32) -> u32 {
    let x = index.wrapping_mul(salt) ^ (index >> 3);
    x.wrapping_mul(0x27d4_eb2d) ^ (x >> 15)
}
