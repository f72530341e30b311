//! Compiles the C test programs in `progs/` (counter.c, sleeper.c) into OUT_DIR with the
//! system C compiler (`$CC`, else `cc`) and exports their paths to the crate as
//! `CKPT_PROG_<NAME>` (read with `env!`). Dynamically linked on purpose: they run under
//! `LD_PRELOAD=libckpt.so`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    println!("cargo:rerun-if-env-changed=CC");
    for name in ["counter", "sleeper"] {
        let src = format!("progs/{name}.c");
        println!("cargo:rerun-if-changed={src}");
        let exe = out.join(name);
        let status = Command::new(&cc)
            .args(["-O2", "-g", "-Wall", "-Wextra", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
        assert!(status.success(), "`{cc}` failed on {src}: {status}");
        println!(
            "cargo:rustc-env=CKPT_PROG_{}={}",
            name.to_uppercase(),
            exe.display()
        );
    }
    println!("cargo:rerun-if-changed=build.rs");
}
