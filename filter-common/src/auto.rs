//! Automatic mitigation's shared definitions (placeholder until the data-plane half lands).

/// Traffic classes counted per protected destination.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AutoClass {
    Total = 0,
    Syn = 1,
    Udp = 2,
    Icmp = 3,
    Fragments = 4,
}

pub const AUTO_CLASS_COUNT: usize = 5;
pub const AUTO_GROUPS_MAX: u32 = 4096;
pub const AUTO_CLASSES: [AutoClass; AUTO_CLASS_COUNT] = [
    AutoClass::Total,
    AutoClass::Syn,
    AutoClass::Udp,
    AutoClass::Icmp,
    AutoClass::Fragments,
];

impl AutoClass {
    pub const fn name(self) -> &'static str {
        match self {
            AutoClass::Total => "total",
            AutoClass::Syn => "syn",
            AutoClass::Udp => "udp",
            AutoClass::Icmp => "icmp",
            AutoClass::Fragments => "fragments",
        }
    }

    pub fn from_name(name: &str) -> Option<AutoClass> {
        AUTO_CLASSES.iter().copied().find(|c| c.name() == name)
    }
}

pub mod auto_mode {
    pub const OFF: u32 = 0;
    pub const SHADOW: u32 = 1;
    pub const ENFORCE: u32 = 2;

    pub fn name(m: u32) -> &'static str {
        match m {
            OFF => "off",
            SHADOW => "shadow",
            _ => "enforce",
        }
    }

    pub fn from_name(s: &str) -> Option<u32> {
        match s {
            "off" => Some(OFF),
            "shadow" => Some(SHADOW),
            "enforce" => Some(ENFORCE),
            _ => None,
        }
    }
}
