//! Compiles every C test program `progs/*.c` into OUT_DIR with the system C compiler (`$CC`,
//! else `cc`, with `-pthread`; `-fopenmp` too for names containing `omp`) and exports each
//! path to the crate as `CKPT_PROG_<NAME>` (read with `env!`). Dynamically linked on purpose:
//! they run under `LD_PRELOAD=libckpt.so`. `*_plugin.c` becomes a shared library
//! (`lib*_plugin.so`, for `ckpt-launch --with-plugin`). A new test program needs no edit here.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-changed=progs");
    let mut names: Vec<String> = std::fs::read_dir("progs")
        .expect("tests/progs")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".c").map(str::to_string))
        .collect();
    names.sort();
    for name in names {
        let src = format!("progs/{name}.c");
        println!("cargo:rerun-if-changed={src}");
        // `*_plugin.c`: a ckpt plugin library (`ckpt-launch --with-plugin`), not a program.
        let plugin = name.ends_with("_plugin");
        let exe = if plugin {
            out.join(format!("lib{name}.so"))
        } else {
            out.join(&name)
        };
        let mut cmd = Command::new(&cc);
        cmd.args(["-O2", "-g", "-Wall", "-Wextra", "-pthread"]);
        if plugin {
            cmd.args(["-shared", "-fPIC"]);
        }
        if name.contains("omp") {
            cmd.arg("-fopenmp");
        }
        let status = cmd
            .arg("-o")
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
