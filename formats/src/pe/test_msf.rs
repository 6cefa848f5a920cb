//! Test support: find and patch the streams of an MSF 7.00 (PDB) file in
//! place, keeping its layout. Used by the formats unit tests and (through
//! `#[path]`) by the CLI tests; it trusts its input, which is a corpus PDB.

#![allow(dead_code)]

/// The stream directory of an MSF file.
pub struct Msf {
    /// The block size.
    pub block_size: usize,
    /// The blocks that hold the stream directory.
    dir_blocks: Vec<usize>,
    /// Each stream's size (`u32::MAX`: no stream) and blocks.
    pub streams: Vec<(u32, Vec<usize>)>,
}

fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}

impl Msf {
    /// Read the superblock and the stream directory.
    pub fn parse(file: &[u8]) -> Msf {
        let block_size = u32_at(file, 32) as usize;
        let dir_bytes = u32_at(file, 44) as usize;
        let map = u32_at(file, 52) as usize * block_size;
        let dir_block_count = dir_bytes.div_ceil(block_size);
        let dir_blocks: Vec<usize> = (0..dir_block_count)
            .map(|i| u32_at(file, map + 4 * i) as usize)
            .collect();
        let mut msf = Msf {
            block_size,
            dir_blocks,
            streams: Vec::new(),
        };
        let dir = msf.gather(file, &msf.dir_blocks, dir_bytes);
        let count = u32_at(&dir, 0) as usize;
        let sizes: Vec<u32> = (0..count).map(|i| u32_at(&dir, 4 + 4 * i)).collect();
        let mut at = 4 + 4 * count;
        for size in sizes {
            let blocks = if size == u32::MAX {
                0
            } else {
                (size as usize).div_ceil(block_size)
            };
            let list = (0..blocks)
                .map(|i| u32_at(&dir, at + 4 * i) as usize)
                .collect();
            at += 4 * blocks;
            msf.streams.push((size, list));
        }
        msf
    }

    /// The file offset of byte `offset` of a stream laid out on `blocks`.
    fn locate(&self, blocks: &[usize], offset: usize) -> usize {
        blocks[offset / self.block_size] * self.block_size + offset % self.block_size
    }

    fn gather(&self, file: &[u8], blocks: &[usize], len: usize) -> Vec<u8> {
        (0..len).map(|i| file[self.locate(blocks, i)]).collect()
    }

    /// Number of streams.
    pub fn count(&self) -> usize {
        self.streams.len()
    }

    /// A stream's size.
    pub fn size(&self, stream: usize) -> usize {
        self.streams[stream].0 as usize
    }

    /// A stream's bytes.
    pub fn read(&self, file: &[u8], stream: usize) -> Vec<u8> {
        let (size, blocks) = &self.streams[stream];
        self.gather(file, blocks, *size as usize)
    }

    /// Overwrite bytes of a stream, from `offset` (inside the stream).
    pub fn write(&self, file: &mut [u8], stream: usize, offset: usize, bytes: &[u8]) {
        let (size, blocks) = &self.streams[stream];
        assert!(
            offset + bytes.len() <= *size as usize,
            "write past stream {stream}"
        );
        for (i, b) in bytes.iter().enumerate() {
            file[self.locate(blocks, offset + i)] = *b;
        }
    }

    /// Change a stream's size in the directory (its block list is left as
    /// it is, so a size that needs a different number of blocks shifts the
    /// lists of the streams after it: damage of its own).
    pub fn set_size(&self, file: &mut [u8], stream: usize, size: u32) {
        for (i, b) in size.to_le_bytes().iter().enumerate() {
            let at = self.locate(&self.dir_blocks, 4 + 4 * stream + i);
            file[at] = *b;
        }
    }
}
