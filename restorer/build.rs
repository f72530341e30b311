//! Link arguments for the freestanding restorer: no crt, no libc, static ET_EXEC at ZONE_BASE
//! (`format/src/raw.rs`). `rustc-link-arg-bins` touches only this package's binary, never its tests.
fn main() {
    for a in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--image-base=0x300000000000",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
    ] {
        println!("cargo:rustc-link-arg-bins={a}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
