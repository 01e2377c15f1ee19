//! Automatic mitigation: per protected destination, detect an attack from the data plane's
//! per-class counters, fingerprint it from arrival samples, install a rule (or fall back to a
//! defence), and lift it once what it matches stayed under the threshold.

pub mod fingerprint;
pub mod kernel;
pub mod mitigate;
pub mod run;
pub mod settings;
