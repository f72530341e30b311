fn main() {
    for a in ["-nostartfiles", "-nostdlib", "-static", "-no-pie", "-Wl,--image-base=0x300000000000", "-Wl,--build-id=none", "-Wl,-z,noexecstack"] {
        println!("cargo:rustc-link-arg-bins={a}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
