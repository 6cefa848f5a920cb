//! Why loading an image or calling into it failed.

/// An error of the VM. Every message is one line and names the image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image file could not be read.
    #[error("{image}: cannot read the image: {detail}")]
    Io {
        /// The image (its path).
        image: String,
        /// What the system said.
        detail: String,
    },
    /// The file is not an image the VM can load (bad headers, ranges
    /// outside the file, an unknown relocation type).
    #[error("{image}: cannot load the image: {detail}")]
    BadImage {
        /// The image.
        image: String,
        /// What is wrong.
        detail: String,
    },
    /// The image is well formed but uses something the VM does not do
    /// (another architecture, TLS relocations, IFUNCs).
    #[error("{image}: the VM does not support {detail}")]
    Unsupported {
        /// The image.
        image: String,
        /// What it uses.
        detail: String,
    },
    /// The load base is not usable.
    #[error("{image}: cannot load at {base:#x}: {detail}")]
    BadBase {
        /// The image.
        image: String,
        /// The base asked for.
        base: u64,
        /// Why.
        detail: String,
    },
    /// No export of that name.
    #[error("{image}: no export named `{name}`")]
    NoExport {
        /// The image.
        image: String,
        /// The name looked up.
        name: String,
    },
    /// More arguments than the calling convention passes in registers.
    #[error("{image}: `{export}` called with {given} arguments; the {convention} convention passes at most {max} here")]
    TooManyArgs {
        /// The image.
        image: String,
        /// The export called.
        export: String,
        /// The calling convention.
        convention: &'static str,
        /// Arguments given.
        given: usize,
        /// Most supported.
        max: usize,
    },
    /// The call reached a trap stub of an import.
    #[error("{image}: `{export}` called import `{import}`, which the VM does not provide")]
    ImportCalled {
        /// The image.
        image: String,
        /// The export that was called.
        export: String,
        /// The import, `library!name` for PE and the symbol name for ELF.
        import: String,
    },
    /// The call ran out of its instruction budget.
    #[error("{image}: `{export}` did not return within its budget of {budget} instructions (pc {pc:#x}): an endless loop?")]
    Budget {
        /// The image.
        image: String,
        /// The export that was called.
        export: String,
        /// The budget.
        budget: u64,
        /// Where it was when the budget ran out.
        pc: u64,
    },
    /// The call faulted (an unmapped or protected access, an invalid
    /// instruction, an exception).
    #[error("{image}: `{export}` faulted at pc {pc:#x}: {detail}")]
    Fault {
        /// The image.
        image: String,
        /// The export that was called.
        export: String,
        /// The program counter when it stopped.
        pc: u64,
        /// What happened.
        detail: String,
    },
    /// A host-side access to VM memory failed.
    #[error("{image}: cannot access {len} bytes at {address:#x}: {detail}")]
    Access {
        /// The image.
        image: String,
        /// First address.
        address: u64,
        /// Length.
        len: u64,
        /// Why.
        detail: String,
    },
    /// No free range of that size within the bounds.
    #[error("{image}: no free {size:#x}-byte range between {lo:#x} and {hi:#x}")]
    NoRoom {
        /// The image.
        image: String,
        /// Size wanted.
        size: u64,
        /// Lowest acceptable start.
        lo: u64,
        /// Highest acceptable end.
        hi: u64,
    },
    /// The emulator itself refused an operation.
    #[error("{image}: emulator: {detail}")]
    Engine {
        /// The image.
        image: String,
        /// What failed.
        detail: String,
    },
    /// Parsing the VM's image with `hotpatch_formats` failed.
    #[error("{0}")]
    Formats(#[from] hotpatch_formats::Error),
}

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
