//! Kernel family selection: `MEKI_KERNELS` is honoured when it names an
//! available family (tools/test.sh runs the suite with `neon-nodotprod`), and
//! forcing an unavailable family is an error.

use meki_kernels::{isa, set_isa, Isa};

#[test]
fn env_var_selects_the_family() {
    match std::env::var("MEKI_KERNELS") {
        Ok(v) => match Isa::from_name(&v) {
            Some(want) if want.is_available() => assert_eq!(isa(), want),
            _ => assert_eq!(isa(), Isa::detect(), "bad or unavailable value falls back"),
        },
        Err(_) => assert_eq!(isa(), Isa::detect()),
    }
    eprintln!("kernel family under test: {}", isa());
}

#[test]
fn forcing_an_unavailable_family_fails() {
    assert!(Isa::Scalar.is_available());
    for i in Isa::ALL {
        if !i.is_available() {
            let e = set_isa(i).unwrap_err();
            assert!(e.to_string().contains(i.name()), "{e}");
        }
    }
    #[cfg(target_arch = "x86_64")]
    assert!(!Isa::Neon.is_available() && !Isa::NeonNoDotprod.is_available());
    #[cfg(target_arch = "aarch64")]
    assert!(!Isa::Avx2.is_available() && Isa::NeonNoDotprod.is_available());
}
