//! Which CPUs the shards run on, and how they group into NUMA nodes
//! (`/sys/devices/system/node/nodeN/cpulist`), so that work tied to a node (hardware
//! encoders, memory) can be placed next to its shards.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuListError {
    #[error("'{list}' is not a CPU list: expected numbers and ranges like \"0-3,8\" ({detail})")]
    Syntax { list: String, detail: String },
    #[error("CPU {cpu} is not online (online CPUs: {online})")]
    Offline { cpu: usize, online: String },
}

/// Parse a Linux CPU list ("0-3,8,10-11") into sorted, de-duplicated CPU numbers.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, CpuListError> {
    let syntax = |detail: String| CpuListError::Syntax {
        list: list.to_owned(),
        detail,
    };
    let mut cpus = Vec::new();
    for part in list.trim().split(',').map(str::trim) {
        if part.is_empty() {
            return Err(syntax("empty item".into()));
        }
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| syntax(format!("'{s}' is not a CPU number")))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 4096 {
                    return Err(syntax(format!("range {a}-{b} is backwards or too large")));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// CPUs and NUMA nodes of this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub online: Vec<usize>,
    /// NUMA node id → its CPUs. One node 0 with every CPU when sysfs has no node info.
    pub nodes: BTreeMap<usize, Vec<usize>>,
}

impl Topology {
    pub fn detect() -> Topology {
        Self::from_sysfs(Path::new("/sys/devices/system"))
    }

    fn from_sysfs(root: &Path) -> Topology {
        let online = std::fs::read_to_string(root.join("cpu/online"))
            .ok()
            .and_then(|s| parse_cpu_list(&s).ok())
            .unwrap_or_else(|| {
                (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
            });
        let mut nodes = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(root.join("node")) {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(id) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("node"))
                    .and_then(|n| n.parse().ok())
                else {
                    continue;
                };
                if let Some(cpus) = std::fs::read_to_string(entry.path().join("cpulist"))
                    .ok()
                    .and_then(|s| parse_cpu_list(&s).ok())
                {
                    nodes.insert(id, cpus);
                }
            }
        }
        if nodes.is_empty() {
            nodes.insert(0, online.clone());
        }
        Topology { online, nodes }
    }

    /// The NUMA node of `cpu` (0 when unknown).
    pub fn node_of(&self, cpu: usize) -> usize {
        self.nodes
            .iter()
            .find(|(_, cpus)| cpus.contains(&cpu))
            .map_or(0, |(id, _)| *id)
    }

    /// Check that every requested CPU is online.
    pub fn select(&self, wanted: Option<&[usize]>) -> Result<Vec<usize>, CpuListError> {
        match wanted {
            None => Ok(self.online.clone()),
            Some(cpus) => {
                for &cpu in cpus {
                    if !self.online.contains(&cpu) {
                        let online = self
                            .online
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(",");
                        return Err(CpuListError::Offline { cpu, online });
                    }
                }
                Ok(cpus.to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_cpu_list("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpu_list(" 8,0-1,1 \n").unwrap(), vec![0, 1, 8]);
        assert_eq!(parse_cpu_list("5").unwrap(), vec![5]);
    }

    #[test]
    fn rejects_bad_lists() {
        assert!(matches!(
            parse_cpu_list("0-"),
            Err(CpuListError::Syntax { .. })
        ));
        assert!(matches!(
            parse_cpu_list("3-1"),
            Err(CpuListError::Syntax { .. })
        ));
        assert!(matches!(
            parse_cpu_list("a"),
            Err(CpuListError::Syntax { .. })
        ));
        assert!(matches!(
            parse_cpu_list("1,,2"),
            Err(CpuListError::Syntax { .. })
        ));
    }

    #[test]
    fn reads_nodes_from_sysfs_layout() {
        let root = std::env::temp_dir().join(format!("shards-topo-{}", std::process::id()));
        std::fs::create_dir_all(root.join("cpu")).unwrap();
        std::fs::create_dir_all(root.join("node/node0")).unwrap();
        std::fs::create_dir_all(root.join("node/node1")).unwrap();
        std::fs::write(root.join("cpu/online"), "0-3\n").unwrap();
        std::fs::write(root.join("node/node0/cpulist"), "0-1\n").unwrap();
        std::fs::write(root.join("node/node1/cpulist"), "2-3\n").unwrap();
        let topo = Topology::from_sysfs(&root);
        assert_eq!(topo.online, vec![0, 1, 2, 3]);
        assert_eq!(topo.node_of(3), 1);
        assert_eq!(topo.select(Some(&[1, 2])).unwrap(), vec![1, 2]);
        assert!(matches!(
            topo.select(Some(&[7])),
            Err(CpuListError::Offline { cpu: 7, .. })
        ));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn this_machine_has_a_node() {
        let topo = Topology::detect();
        assert!(!topo.online.is_empty());
        assert!(!topo.nodes.is_empty());
    }
}
