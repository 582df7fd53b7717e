//! `server.cores`: the CPU-list parser (`"all"` or `"0-3,8"`), its canonical printed
//! form, and the check of a list against the CPUs this process may run on.

use std::fmt;
use std::str::FromStr;

use super::error::invalid;
use super::ConfigError;

/// Linux's NR_CPUS ceiling; also keeps `0-4000000000` from allocating a huge list.
const MAX_CPU_ID: usize = 8191;
pub(super) const CORES_EXPECTED: &str =
    "\"all\" or a CPU list such as \"0-3,8\" (ids and ascending ranges \
     from 0 to 8191, separated by commas)";

/// `server.cores`: all online CPUs, or an explicit sorted, de-duplicated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cores {
    All,
    List(Vec<usize>),
}

impl Cores {
    /// The CPUs to start shards on, given the CPUs this process may run on.
    pub fn resolve(&self, online: &[usize]) -> Result<Vec<usize>, ConfigError> {
        match self {
            Cores::All => {
                let mut all = online.to_vec();
                all.sort_unstable();
                all.dedup();
                Ok(all)
            }
            Cores::List(list) => match list.iter().find(|cpu| !online.contains(cpu)) {
                Some(cpu) => Err(invalid(
                    "server.cores",
                    format!("\"{self}\""),
                    format!(
                        "CPUs this process may run on ({}); CPU {cpu} is not one of them",
                        Cores::List(online.to_vec())
                    ),
                )),
                None => Ok(list.clone()),
            },
        }
    }
}

impl FromStr for Cores {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let bad = || invalid("server.cores", format!("\"{text}\""), CORES_EXPECTED);
        let text_trimmed = text.trim();
        if text_trimmed.eq_ignore_ascii_case("all") {
            return Ok(Cores::All);
        }
        let id = |s: &str| -> Result<usize, ConfigError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<usize>()
                .ok()
                .filter(|&n| n <= MAX_CPU_ID)
                .ok_or_else(bad)
        };
        // A bitmap, not a Vec: "0-8191" repeated across a long string stays 8 KiB.
        let mut chosen = vec![false; MAX_CPU_ID + 1];
        for item in text_trimmed.split(',') {
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (id(lo)?, id(hi)?),
                None => (id(item)?, id(item)?),
            };
            if lo > hi {
                return Err(bad());
            }
            chosen[lo..=hi].fill(true);
        }
        let cpus = (0..=MAX_CPU_ID).filter(|&cpu| chosen[cpu]).collect();
        Ok(Cores::List(cpus))
    }
}

/// The canonical form: `all`, or runs of consecutive ids collapsed to ranges (`0-3,8`).
impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Cores::List(list) = self else {
            return f.write_str("all");
        };
        let mut i = 0;
        while i < list.len() {
            let start = list[i];
            while i + 1 < list.len() && list[i + 1] == list[i] + 1 {
                i += 1;
            }
            let end = list[i];
            if start != list[0] {
                f.write_str(",")?;
            }
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::load::tests::invalid_key;

    #[test]
    fn cores_parse_sorted_and_deduplicated() {
        assert_eq!("all".parse::<Cores>().unwrap(), Cores::All);
        assert_eq!(
            "8, 0-3,2,3-4".parse::<Cores>().unwrap(),
            Cores::List(vec![0, 1, 2, 3, 4, 8])
        );
        let cores: Cores = "6,0-3,8,9,10".parse().unwrap();
        assert_eq!(cores.to_string(), "0-3,6,8-10");
        assert_eq!(cores.to_string().parse::<Cores>().unwrap(), cores);
        // Overlapping ranges cost no more than one.
        let many = vec!["0-8191"; 10_000].join(",");
        assert_eq!(many.parse::<Cores>().unwrap().to_string(), "0-8191");
    }

    #[test]
    fn bad_cores_name_the_key_and_the_form() {
        for bad in ["", "x", "3-1", "0-", "1,,2", "-1", "0-100000000000", "1.5"] {
            let err = bad.parse::<Cores>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("server.cores = \"{bad}\": expected")),
                "{err}"
            );
            assert!(err.contains("\"0-3,8\""), "{err}");
        }
        let (key, message) = invalid_key("[server]\ncores = \"0-x\"\n");
        assert_eq!(key, "server.cores");
        assert!(message.contains("test.toml:2:9"), "{message}");
    }

    #[test]
    fn cores_resolve_against_online_cpus() {
        let online = [0, 1, 2, 3];
        assert_eq!(Cores::All.resolve(&online).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            Cores::List(vec![1, 3]).resolve(&online).unwrap(),
            vec![1, 3]
        );
        let err = Cores::List(vec![1, 7])
            .resolve(&online)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CPU 7 is not one of them"), "{err}");
        assert!(err.contains("(0-3)"), "{err}");
    }
}
