//! Links `rundmc-init` with no C runtime and no libc: it is a static
//! binary whose `_start` is its own.

fn main() {
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
    println!("cargo:rustc-link-arg-bins=-nostdlib");
    println!("cargo:rustc-link-arg-bins=-static");
}
