//! Kfunc calls, linked into the object before aya loads it.
//!
//! aya 0.14 knows helpers (a call by number) and calls between the object's own functions, not
//! kernel functions (kfuncs): a call to one arrives as a call to an undefined symbol, and aya
//! fails the whole object ("error relocating function"). The kernel wants such a call as
//! `call` with `src_reg = BPF_PSEUDO_KFUNC_CALL` and `imm` = the function's id in vmlinux BTF
//! (`off` = 0: vmlinux, not a module). This module rewrites each call to an undefined symbol
//! that names a kfunc the kernel has; aya then leaves the instruction alone (it is no longer a
//! pseudo call and its symbol is in no section). A kfunc the kernel lacks is replaced by
//! `r0 = -EOPNOTSUPP`, so the rest of the object still loads; the program that needs it is
//! then not to be loaded (see [`Linked::missing`]).

use aya_obj::btf::{Btf, BtfKind};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

use crate::error::{Error, Result};

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_ALU64 | BPF_MOV | BPF_K`.
const MOV64_IMM: u8 = 0xb7;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

/// The object with its kfunc calls linked.
pub struct Linked {
    pub object: Vec<u8>,
    /// Kfuncs the object calls that this kernel does not have (their calls return
    /// -EOPNOTSUPP and must not run: do not load the programs that use them).
    pub missing: Vec<String>,
}

/// Link every call to an undefined symbol in `object` against the kernel's BTF (`btf`; None:
/// the kernel has no BTF, so every kfunc counts as missing).
pub fn link(object: &[u8], btf: Option<&Btf>) -> Result<Linked> {
    let bad = |what: String| Error::Io {
        context: "linking kfunc calls into the XDP object".into(),
        source: std::io::Error::other(what),
    };
    let file = object::File::parse(object).map_err(|e| bad(e.to_string()))?;
    let mut out = object.to_vec();
    let mut missing = Vec::new();
    for section in file.sections() {
        let Some((base, _)) = section.file_range() else {
            continue;
        };
        for (offset, rel) in section.relocations() {
            let RelocationTarget::Symbol(index) = rel.target() else {
                continue;
            };
            let sym = file
                .symbol_by_index(index)
                .map_err(|e| bad(e.to_string()))?;
            if !sym.is_undefined() || sym.section_index().is_some() {
                continue;
            }
            let name = sym.name().map_err(|e| bad(e.to_string()))?;
            if name.is_empty() {
                continue;
            }
            let at = (base + offset) as usize;
            let Some(insn) = out.get_mut(at..at + 8) else {
                return Err(bad(format!("relocation for {name} outside its section")));
            };
            if insn[0] != CALL {
                return Err(bad(format!(
                    "{name} is undefined and used other than by a call (opcode {:#x})",
                    insn[0]
                )));
            }
            match btf.and_then(|b| b.id_by_type_name_kind(name, BtfKind::Func).ok()) {
                Some(id) => {
                    insn[1] = BPF_PSEUDO_KFUNC_CALL << 4;
                    insn[2..4].copy_from_slice(&0i16.to_le_bytes());
                    insn[4..8].copy_from_slice(&(id as i32).to_le_bytes());
                }
                None => {
                    // r0 = -EOPNOTSUPP
                    insn[0] = MOV64_IMM;
                    insn[1] = 0;
                    insn[2..4].copy_from_slice(&0i16.to_le_bytes());
                    insn[4..8].copy_from_slice(&(-libc::EOPNOTSUPP).to_le_bytes());
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_string());
                    }
                }
            }
        }
    }
    Ok(Linked {
        object: out,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_object_links_against_this_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            panic!("no kernel BTF at /sys/kernel/btf/vmlinux");
        };
        let linked = link(crate::loader::OBJECT, Some(&btf)).expect("links");
        assert!(
            linked.missing.is_empty(),
            "kfuncs missing on this kernel: {:?}",
            linked.missing
        );
        assert_ne!(linked.object, crate::loader::OBJECT, "a call was rewritten");
        let none = link(crate::loader::OBJECT, None).expect("links without BTF");
        assert_eq!(none.missing, ["bpf_sk_assign_tcp_reqsk"]);
    }
}
