//! The restart plan of a process tree, computed from the image headers before anything is
//! forked (pure: no system calls, unit-tested with synthetic headers).
//!
//! Owns: checking that the images form one complete checkpoint generation (same computation
//! and generation, every peer present, no vpid or pid twice, no parent cycle); who creates each
//! process (its recorded parent when that parent is restored too, else the helper D — the
//! namespace's pid 1, or C in fallback mode); the order in which each creator makes its
//! children and zombies (ascending pid); which process calls `setsid()`, which becomes a group
//! leader and which joins which group; which process is the root (its exit status is
//! ckpt-restart's); the union of the shared objects; what to install on every fd number; and
//! the lowest fd number above everything any image needs (ckpt-restart keeps its own fds there).
//!
//! Sessions and groups of the launched processes (the root, and any other process started by
//! `ckpt-launch` into the same computation) are the launch's (the job and session of the shell
//! that ran `ckpt-launch`): they and every process that shared them inherit ckpt-restart's.

use ckpt_format::image::{ImageHeader, SharedObject};
use std::collections::{BTreeMap, HashMap};

/// Something a creator makes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A restored process: index into [`Plan::nodes`].
    Child(usize),
    /// A child that had exited but was not reaped: created and made to exit with `status`.
    /// `slot` is its control-page slot (after the nodes' slots).
    Zombie { slot: usize, pid: i32, status: i32 },
}

/// What a process does about its process group once every process exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Keep the group it inherited from its creator.
    Inherit,
    /// `setpgid(0, 0)`.
    Leader,
    /// `setpgid(0, pid of node)` once that node led its group.
    Join(usize),
}

/// Where the object installed on an fd number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A shared object ckpt-restart creates (`end`: 0 read end / file, 1 write end).
    Object { key: u64, end: u8 },
    /// ckpt-restart's own fd `from` (or `/dev/null` opened with `accmode` if it has none).
    Inherit { from: i32, accmode: i32 },
}

/// `Source::Object::end` of a shared memory backing.
pub const SHM_END: u8 = 2;

/// The backing of shared memory mapped by one or more processes.
#[derive(Debug, Clone, PartialEq)]
pub struct ShmObject {
    pub key: u64,
    /// Bytes the backing must have (the largest any image needs).
    pub size: u64,
    /// `/dev/shm/NAME` to reopen (contents replaced), or `None`: an anonymous memfd.
    pub path: Option<String>,
    /// A SysV segment: recreated (or reused) with `shmget`; the backing is a memfd holding
    /// its id.
    pub sysv: Option<ckpt_format::image::SysvSeg>,
}

/// One fd number to fill before the restorer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Install {
    pub fd: i32,
    pub source: Source,
}

/// One restored process (index = index of its image).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub vpid: u64,
    /// Pid at checkpoint time (recreated with `set_tid` in namespace mode).
    pub pid: i32,
    pub program: String,
    /// Who creates it: a node index, or `None` for the helper (D, or C in fallback mode).
    pub creator: Option<usize>,
    /// Children and zombies it creates, ascending pid.
    pub steps: Vec<Step>,
    /// Calls `setsid()` right after it was created, before it creates its children.
    pub setsid: bool,
    pub group: Group,
    pub installs: Vec<Install>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub nodes: Vec<Node>,
    /// What the helper creates (roots and orphans), ascending pid.
    pub top: Vec<Step>,
    /// The process whose exit status is ckpt-restart's.
    pub root: usize,
    /// Depth-first creation order of the nodes (for information and tests).
    pub order: Vec<usize>,
    /// Control-page slots: one per node, then one per zombie.
    pub nslots: usize,
    /// Every shared object once (the copy with data when one image has it).
    pub objects: Vec<SharedObject>,
    /// Shared memory objects (one backing each), installed with `end = SHM_END`.
    pub shm: Vec<ShmObject>,
    /// Lowest fd number above every fd number any image needs.
    pub high_fd: i32,
    /// Things that cannot be restored exactly (printed, not fatal).
    pub warnings: Vec<String>,
    pub computation_id: u64,
    pub generation: u64,
}

impl Plan {
    /// Builds the plan from `(image name, header)` pairs, in the order the user gave them.
    /// Errors are one line naming the images or vpids concerned.
    pub fn build(images: &[(&str, &ImageHeader)]) -> Result<Plan, String> {
        Plan::build_part(images, false)
    }

    /// As [`Plan::build`]; `part`: these images are one part of a restart in parts (the
    /// checkpoint's other processes are restarted by other `ckpt-restart --part` commands),
    /// so processes missing here are no error.
    pub fn build_part(images: &[(&str, &ImageHeader)], part: bool) -> Result<Plan, String> {
        let Some(&(first_name, first)) = images.first() else {
            return Err("no image given".into());
        };
        for &(name, h) in &images[1..] {
            if h.computation_id != first.computation_id || h.generation != first.generation {
                return Err(format!(
                    "{first_name} and {name} are not from the same checkpoint \
                     (computation {:016x} generation {} vs computation {:016x} generation {})",
                    first.computation_id, first.generation, h.computation_id, h.generation
                ));
            }
        }
        let generation = first.generation;
        let mut by_vpid: HashMap<u64, usize> = HashMap::new();
        for (i, &(name, h)) in images.iter().enumerate() {
            if let Some(&j) = by_vpid.get(&h.vpid) {
                return Err(format!(
                    "{} and {name} are both vpid {} of the same checkpoint",
                    images[j].0, h.vpid
                ));
            }
            by_vpid.insert(h.vpid, i);
        }
        // Every process of the checkpoint must come back.
        let mut peers: BTreeMap<u64, &str> = BTreeMap::new();
        for &(_, h) in images {
            for p in &h.peers {
                peers.entry(p.vpid).or_insert(&p.program);
            }
        }
        let missing: Vec<String> = peers
            .iter()
            .filter(|(v, _)| !by_vpid.contains_key(v))
            .map(|(v, prog)| format!("vpid {v} ({prog})"))
            .collect();
        if part && peers.is_empty() {
            return Err(format!(
                "{first_name}: the image does not list the checkpoint's processes; restart all of them with one ckpt-restart"
            ));
        }
        if !missing.is_empty() && !part {
            return Err(format!(
                "restart needs every image of generation {generation}: missing {}",
                missing.join(", ")
            ));
        }
        let want = images.iter().map(|(_, h)| h.num_peers).max().unwrap_or(0) as usize;
        if peers.is_empty() && want > images.len() && !part {
            return Err(format!(
                "restart needs every image of generation {generation}: {} given, the checkpoint had {want} processes",
                images.len()
            ));
        }

        let n = images.len();
        let hdr = |i: usize| images[i].1;
        let creator: Vec<Option<usize>> = (0..n)
            .map(|i| hdr(i).parent.and_then(|p| by_vpid.get(&p).copied()))
            .map(|c| c.filter(|&c| c < n))
            .collect();
        // Pids: live and zombie, all distinct.
        let mut pids: HashMap<i32, String> = HashMap::new();
        for i in 0..n {
            let h = hdr(i);
            let mut claim = |pid: i32, what: String| -> Result<(), String> {
                if let Some(other) = pids.insert(pid, what.clone()) {
                    return Err(format!("pid {pid} is used twice: {other} and {what}"));
                }
                Ok(())
            };
            claim(h.pid, format!("vpid {}", h.vpid))?;
            for z in &h.zombies {
                claim(z.pid, format!("a zombie child of vpid {}", h.vpid))?;
            }
        }

        // Creation steps, ascending pid; zombies get slots after the nodes.
        let mut steps: Vec<Vec<(i32, Step)>> = vec![Vec::new(); n];
        let mut top: Vec<(i32, Step)> = Vec::new();
        for (i, cr) in creator.iter().enumerate() {
            match *cr {
                Some(c) => steps[c].push((hdr(i).pid, Step::Child(i))),
                None => top.push((hdr(i).pid, Step::Child(i))),
            }
        }
        let mut nslots = n;
        for (i, list) in steps.iter_mut().enumerate() {
            for z in &hdr(i).zombies {
                list.push((
                    z.pid,
                    Step::Zombie {
                        slot: nslots,
                        pid: z.pid,
                        status: z.status,
                    },
                ));
                nslots += 1;
            }
            list.sort_by_key(|&(pid, _)| pid);
        }
        top.sort_by_key(|&(pid, _)| pid);
        let steps: Vec<Vec<Step>> = steps
            .into_iter()
            .map(|l| l.into_iter().map(|(_, s)| s).collect())
            .collect();
        let top: Vec<Step> = top.into_iter().map(|(_, s)| s).collect();

        // Depth-first order; whatever is not reached hangs in a parent cycle.
        let mut order = Vec::with_capacity(n);
        let mut stack: Vec<usize> = top
            .iter()
            .rev()
            .filter_map(|s| match *s {
                Step::Child(c) => Some(c),
                Step::Zombie { .. } => None,
            })
            .collect();
        while let Some(i) = stack.pop() {
            order.push(i);
            for s in steps[i].iter().rev() {
                if let Step::Child(c) = *s {
                    stack.push(c);
                }
            }
        }
        if order.len() != n {
            let mut stuck: Vec<u64> = (0..n)
                .filter(|i| !order.contains(i))
                .map(|i| hdr(i).vpid)
                .collect();
            stuck.sort_unstable();
            let list: Vec<String> = stuck.iter().map(u64::to_string).collect();
            return Err(format!(
                "the parent links of vpids {} form a cycle",
                list.join(", ")
            ));
        }

        // The root: the process ckpt-launch started.
        let lowest = |it: &mut dyn Iterator<Item = usize>| it.min_by_key(|&i| hdr(i).vpid);
        let root = lowest(&mut (0..n).filter(|&i| hdr(i).root))
            .or_else(|| lowest(&mut (0..n).filter(|&i| hdr(i).parent.is_none())))
            .or_else(|| lowest(&mut (0..n).filter(|&i| creator[i].is_none())))
            .unwrap_or(0);

        // Sessions and groups. Those of the launched processes (the root, and any other process
        // `ckpt-launch` started into the same computation) belong to the shells that ran
        // ckpt-launch: they stand for ckpt-restart's own session and group (`OUTSIDE`).
        // A launched process that leads its own group (a shell job, an interactive shell with
        // job control, `setpgid(0, 0)`) leads it again, inside ckpt-restart's session: the
        // program's own pgid then names a real group (an interactive bash gives the terminal
        // to it, and must find itself there).
        const OUTSIDE: i32 = i32::MIN;
        let launched = |i: usize| i == root || hdr(i).root;
        let self_led = |i: usize| launched(i) && hdr(i).pid > 0 && hdr(i).pgid == hdr(i).pid;
        let outside_pg: Vec<i32> = (0..n)
            .filter(|&i| launched(i) && !self_led(i))
            .map(|i| hdr(i).pgid)
            .collect();
        let outside_sid: Vec<i32> = (0..n)
            .filter(|&i| launched(i))
            .map(|i| hdr(i).sid)
            .collect();
        let sid_of = |i: usize| {
            let s = hdr(i).sid;
            if outside_sid.contains(&s) { OUTSIDE } else { s }
        };
        let setsid: Vec<bool> = (0..n)
            .map(|i| !launched(i) && hdr(i).sid == hdr(i).pid && sid_of(i) != OUTSIDE)
            .collect();
        let mut warnings = Vec::new();
        // The session each process ends up in.
        let mut eff_sid = vec![OUTSIDE; n];
        let mut session_warned: Vec<i32> = Vec::new();
        for &i in &order {
            eff_sid[i] = if setsid[i] {
                hdr(i).pid
            } else {
                creator[i].map_or(OUTSIDE, |c| eff_sid[c])
            };
            let h = hdr(i);
            if eff_sid[i] != sid_of(i) && !session_warned.contains(&h.sid) {
                session_warned.push(h.sid);
                warnings.push(format!(
                    "vpid {} ({}): session {} cannot be recreated (its leader is not an ancestor among the restored processes); it keeps the session it inherits",
                    h.vpid, h.program, h.sid
                ));
            }
        }
        let by_pid: HashMap<i32, usize> = (0..n).map(|i| (hdr(i).pid, i)).collect();
        let leads = |i: usize| -> bool {
            self_led(i)
                || (!launched(i) && hdr(i).pgid == hdr(i).pid && !outside_pg.contains(&hdr(i).pgid))
        };
        let mut lost_groups: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
        let group: Vec<Group> = (0..n)
            .map(|i| {
                let h = hdr(i);
                if self_led(i) {
                    Group::Leader
                } else if launched(i) || outside_pg.contains(&h.pgid) {
                    Group::Inherit
                } else if h.pgid == h.pid {
                    if setsid[i] {
                        Group::Inherit // setsid() made it the leader of its own group
                    } else {
                        Group::Leader
                    }
                } else {
                    match by_pid.get(&h.pgid) {
                        Some(&l) if leads(l) && eff_sid[l] == eff_sid[i] => Group::Join(l),
                        _ => {
                            lost_groups.entry(h.pgid).or_default().push(h.vpid);
                            Group::Inherit
                        }
                    }
                }
            })
            .collect();
        for (g, vpids) in lost_groups {
            let list: Vec<String> = vpids.iter().map(u64::to_string).collect();
            warnings.push(format!(
                "process group {g} has no leader among the restored processes: vpid {} keep{} the group {} inherit{}",
                list.join(", "),
                if vpids.len() == 1 { "s" } else { "" },
                if vpids.len() == 1 { "it" } else { "they" },
                if vpids.len() == 1 { "s" } else { "" },
            ));
        }

        // Shared objects, once each.
        let mut objects: Vec<SharedObject> = Vec::new();
        let mut obj_at: HashMap<u64, usize> = HashMap::new();
        for &(_, h) in images {
            for o in &h.objects {
                match obj_at.get(&o.key) {
                    Some(&k) => {
                        if o.has_data && !objects[k].has_data {
                            objects[k] = o.clone();
                        }
                    }
                    None => {
                        obj_at.insert(o.key, objects.len());
                        objects.push(o.clone());
                    }
                }
            }
        }

        // What to install, and where ckpt-restart's own fds may live.
        let mut high = 2i32;
        let mut shm: Vec<ShmObject> = Vec::new();
        let mut nodes = Vec::with_capacity(n);
        for (i, step_list) in steps.into_iter().enumerate() {
            let (name, h) = images[i];
            let mut installs = Vec::new();
            for f in &h.fds {
                high = high.max(f.fd);
                let source = if let Some(r) = f.object {
                    if !obj_at.contains_key(&r.key) {
                        return Err(format!(
                            "{name}: fd {} refers to shared object {:#x}, which no image describes",
                            f.fd, r.key
                        ));
                    }
                    Source::Object {
                        key: r.key,
                        end: r.end,
                    }
                } else if let Some(from) = f.reinherit_from {
                    high = high.max(from);
                    Source::Inherit {
                        from,
                        accmode: f.flags & libc::O_ACCMODE,
                    }
                } else {
                    continue;
                };
                installs.push(Install { fd: f.fd, source });
            }
            for m in &h.shm {
                high = high.max(m.fd_hint);
                match shm.iter_mut().find(|o| o.key == m.key) {
                    Some(o) => {
                        o.size = o.size.max(m.size);
                        if o.path.is_none() {
                            o.path = m.path.clone();
                        }
                        if o.sysv.is_none() {
                            o.sysv = m.sysv;
                        }
                    }
                    None => shm.push(ShmObject {
                        key: m.key,
                        size: m.size,
                        path: m.path.clone(),
                        sysv: m.sysv,
                    }),
                }
                let inst = Install {
                    fd: m.fd_hint,
                    source: Source::Object {
                        key: m.key,
                        end: SHM_END,
                    },
                };
                if !installs.contains(&inst) {
                    installs.push(inst);
                }
            }
            nodes.push(Node {
                vpid: h.vpid,
                pid: h.pid,
                program: h.program.clone(),
                creator: creator[i],
                steps: step_list,
                setsid: setsid[i],
                group: group[i],
                installs,
            });
        }
        Ok(Plan {
            nodes,
            top,
            root,
            order,
            nslots,
            objects,
            shm,
            high_fd: high + 1,
            warnings,
            computation_id: first.computation_id,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_format::image::{FdInfo, ObjKind, ObjRef, PeerInfo, ZombieChild};

    fn hdr(vpid: u64, parent: Option<u64>, program: &str) -> ImageHeader {
        ImageHeader {
            computation_id: 0xabc,
            generation: 3,
            vpid,
            pid: vpid as i32,
            parent,
            pgid: 100,
            sid: 50,
            program: program.into(),
            ..Default::default()
        }
    }

    fn with_peers(mut hs: Vec<ImageHeader>) -> Vec<ImageHeader> {
        let peers: Vec<PeerInfo> = hs
            .iter()
            .map(|h| PeerInfo {
                vpid: h.vpid,
                pid: h.pid,
                program: h.program.clone(),
            })
            .collect();
        let n = hs.len() as u32;
        for h in &mut hs {
            h.peers = peers.clone();
            h.num_peers = n;
        }
        hs
    }

    fn plan(hs: &[ImageHeader]) -> Result<Plan, String> {
        let names: Vec<String> = hs.iter().map(|h| format!("img{}", h.vpid)).collect();
        let v: Vec<(&str, &ImageHeader)> = names.iter().map(String::as_str).zip(hs).collect();
        Plan::build(&v)
    }

    fn vpids(p: &Plan, list: &[usize]) -> Vec<u64> {
        list.iter().map(|&i| p.nodes[i].vpid).collect()
    }

    #[test]
    fn single_image_is_a_root_made_by_the_helper() {
        let mut h = hdr(4242, None, "counter");
        h.pgid = 4242; // launched as a shell job: it leads its group again
        h.sid = 4000;
        h.num_peers = 1;
        let p = plan(&[h]).unwrap();
        assert_eq!(p.top, vec![Step::Child(0)]);
        assert_eq!(p.root, 0);
        assert_eq!(p.nodes[0].creator, None);
        assert!(!p.nodes[0].setsid);
        assert_eq!(p.nodes[0].group, Group::Leader);
        assert!(p.warnings.is_empty());
        assert_eq!(p.high_fd, 3);
        assert_eq!(p.nslots, 1);
    }

    #[test]
    fn parents_create_children_depth_first_in_pid_order() {
        // 10 ─┬─ 30 ── 31
        //     └─ 20 ── 21 (zombie 25 of 10)
        // 40 orphan (parent gone) → helper
        let mut root = hdr(10, None, "sh");
        root.root = true;
        root.zombies = vec![ZombieChild {
            pid: 25,
            status: 7 << 8,
        }];
        let mut orphan = hdr(40, None, "daemon");
        orphan.parent = None;
        let hs = with_peers(vec![
            hdr(31, Some(30), "c"),
            root,
            hdr(30, Some(10), "b"),
            hdr(20, Some(10), "a"),
            hdr(21, Some(20), "a2"),
            orphan,
        ]);
        let p = plan(&hs).unwrap();
        assert_eq!(p.nodes[p.root].vpid, 10);
        assert_eq!(vpids(&p, &p.order), vec![10, 20, 21, 30, 31, 40]);
        let idx = |v: u64| p.nodes.iter().position(|n| n.vpid == v).unwrap();
        assert_eq!(p.top, vec![Step::Child(idx(10)), Step::Child(idx(40))]);
        assert_eq!(
            p.nodes[idx(10)].steps,
            vec![
                Step::Child(idx(20)),
                Step::Zombie {
                    slot: 6,
                    pid: 25,
                    status: 7 << 8
                },
                Step::Child(idx(30)),
            ]
        );
        assert_eq!(p.nodes[idx(31)].creator, Some(idx(30)));
        assert_eq!(p.nodes[idx(40)].creator, None);
        assert_eq!(p.nslots, 7);
    }

    #[test]
    fn root_without_flag_is_the_lowest_parentless_vpid() {
        let hs = with_peers(vec![
            hdr(7, Some(5), "x"),
            hdr(9, None, "y"),
            hdr(5, None, "z"),
        ]);
        let p = plan(&hs).unwrap();
        assert_eq!(p.nodes[p.root].vpid, 5);
    }

    #[test]
    fn missing_image_is_named() {
        let hs = with_peers(vec![hdr(10, None, "sh"), hdr(11, Some(10), "awk")]);
        let err = plan(&hs[..1]).unwrap_err();
        assert_eq!(
            err,
            "restart needs every image of generation 3: missing vpid 11 (awk)"
        );
    }

    #[test]
    fn missing_image_without_peer_list_is_counted() {
        let mut h = hdr(10, None, "sh");
        h.num_peers = 2;
        let err = plan(&[h]).unwrap_err();
        assert_eq!(
            err,
            "restart needs every image of generation 3: 1 given, the checkpoint had 2 processes"
        );
    }

    #[test]
    fn mismatched_generation_names_both_images() {
        let a = hdr(10, None, "sh");
        let mut b = hdr(11, Some(10), "awk");
        b.generation = 4;
        let err = plan(&[a, b]).unwrap_err();
        assert!(
            err.starts_with("img10 and img11 are not from the same checkpoint"),
            "{err}"
        );
        assert!(
            err.contains("generation 3") && err.contains("generation 4"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_vpid_and_pid_and_cycle_are_refused() {
        let err = plan(&[hdr(10, None, "a"), hdr(10, None, "b")]).unwrap_err();
        assert!(err.contains("both vpid 10"), "{err}");

        let mut a = hdr(10, None, "a");
        a.zombies = vec![ZombieChild { pid: 11, status: 0 }];
        let err = plan(&[a, hdr(11, Some(10), "b")]).unwrap_err();
        assert!(err.starts_with("pid 11 is used twice"), "{err}");

        let err = plan(&[
            hdr(1, None, "r"),
            hdr(10, Some(11), "a"),
            hdr(11, Some(10), "b"),
        ])
        .unwrap_err();
        assert_eq!(err, "the parent links of vpids 10, 11 form a cycle");
    }

    #[test]
    fn sessions_and_groups() {
        // root 10 in the launch's group 100 / session 50; 11 inherits them; 12 is a daemon that
        // made its own session; 13 its child leads a group that 14 (13's child) and 15 (12's
        // child) join; 16 is in a group whose leader is gone.
        let mut root = hdr(10, None, "sh");
        root.root = true;
        let mut d = hdr(12, Some(10), "daemon");
        d.sid = 12;
        d.pgid = 12;
        let mut l = hdr(13, Some(12), "leader");
        l.sid = 12;
        l.pgid = 13;
        let mut m1 = hdr(14, Some(13), "m1");
        m1.sid = 12;
        m1.pgid = 13;
        let mut m2 = hdr(15, Some(12), "m2");
        m2.sid = 12;
        m2.pgid = 13;
        let mut lost = hdr(16, Some(10), "lost");
        lost.pgid = 99;
        let hs = with_peers(vec![root, hdr(11, Some(10), "kid"), d, l, m1, m2, lost]);
        let p = plan(&hs).unwrap();
        let idx = |v: u64| p.nodes.iter().position(|n| n.vpid == v).unwrap();
        let n = |v: u64| &p.nodes[idx(v)];
        assert_eq!((n(10).setsid, n(10).group), (false, Group::Inherit));
        assert_eq!((n(11).setsid, n(11).group), (false, Group::Inherit));
        assert_eq!((n(12).setsid, n(12).group), (true, Group::Inherit));
        assert_eq!((n(13).setsid, n(13).group), (false, Group::Leader));
        assert_eq!(n(14).group, Group::Join(idx(13)));
        assert_eq!(n(15).group, Group::Join(idx(13)));
        assert_eq!(n(16).group, Group::Inherit);
        assert_eq!(
            p.warnings,
            vec![
                "process group 99 has no leader among the restored processes: vpid 16 keeps the group it inherits"
                    .to_string()
            ]
        );
    }

    #[test]
    fn every_launched_process_keeps_the_launch_group_and_session() {
        // Two programs started by two ckpt-launch runs into one computation: the first leads
        // its own group (a shell job: it leads it again), the second is in a group led by a
        // process outside (it and its child stay in ckpt-restart's).
        let mut a = hdr(10, None, "a");
        a.root = true;
        (a.pgid, a.sid) = (10, 5);
        let mut b = hdr(20, None, "b");
        b.root = true;
        (b.pgid, b.sid) = (18, 6);
        let mut kid = hdr(21, Some(20), "kid");
        (kid.pgid, kid.sid) = (18, 6);
        let p = plan(&with_peers(vec![a, b, kid])).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let groups: Vec<(u64, Group)> = p.nodes.iter().map(|n| (n.vpid, n.group)).collect();
        assert_eq!(
            groups,
            vec![
                (10, Group::Leader),
                (20, Group::Inherit),
                (21, Group::Inherit)
            ]
        );
        assert!(p.nodes.iter().all(|n| !n.setsid));
        assert_eq!(p.nodes[p.root].vpid, 10);
    }

    #[test]
    fn orphan_in_an_inside_session_is_warned_about() {
        let mut root = hdr(10, None, "sh");
        root.root = true;
        let mut o = hdr(20, None, "orphan");
        o.sid = 15; // its session leader exited
        o.pgid = 20;
        let p = plan(&with_peers(vec![root, o])).unwrap();
        assert_eq!(p.nodes[1].group, Group::Leader);
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains("session 15 cannot be recreated"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn objects_installs_and_high_fd() {
        let obj = |has_data: bool, data: &[u8]| SharedObject {
            key: 77,
            kind: ObjKind::Pipe { size: 65536 },
            flags: vec![0, 1],
            offset: 0,
            has_data,
            data: data.to_vec(),
        };
        let mut a = hdr(10, None, "w");
        a.root = true;
        a.objects = vec![obj(false, b"")];
        a.fds = vec![
            FdInfo {
                fd: 1,
                object: Some(ObjRef { key: 77, end: 1 }),
                ..Default::default()
            },
            FdInfo {
                fd: 2,
                reinherit_from: Some(251),
                flags: libc::O_WRONLY | libc::O_APPEND,
                ..Default::default()
            },
            FdInfo {
                fd: 9,
                ..Default::default()
            },
        ];
        let mut b = hdr(11, Some(10), "r");
        b.objects = vec![obj(true, b"abc")];
        b.fds = vec![FdInfo {
            fd: 0,
            object: Some(ObjRef { key: 77, end: 0 }),
            ..Default::default()
        }];
        let p = plan(&with_peers(vec![a, b.clone()])).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].data, b"abc");
        assert_eq!(p.high_fd, 252);
        assert_eq!(
            p.nodes[0].installs,
            vec![
                Install {
                    fd: 1,
                    source: Source::Object { key: 77, end: 1 }
                },
                Install {
                    fd: 2,
                    source: Source::Inherit {
                        from: 251,
                        accmode: libc::O_WRONLY
                    }
                },
            ]
        );
        b.objects.clear();
        b.fds[0].object = Some(ObjRef { key: 78, end: 0 });
        let err = plan(&with_peers(vec![b])).unwrap_err();
        assert_eq!(
            err,
            "img11: fd 0 refers to shared object 0x4e, which no image describes"
        );
    }
}
