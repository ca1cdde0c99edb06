//! Server selection for new clients: pure functions over a slice of candidates.
//!
//! The data plane builds the candidate list from its current view (only servers that
//! may take *new* clients: health up, admin `ready`) and asks one of these for an index.
//! Nothing here reads a clock, a socket or a global; see DESIGN principle 7.

/// One server as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Stable identity used by the consistent hash; must not depend on list position.
    pub name: &'a str,
    pub weight: u32,
    /// Connections currently assigned (queued, connecting or established).
    pub load: u32,
}

/// Weighted least connections: the smallest `load / weight`, compared exactly by
/// cross-multiplication. Ties are broken by rotating from `tie_start`, so equal servers
/// share new clients instead of the first one in the list taking every tie.
pub fn leastconn(candidates: &[Candidate<'_>], tie_start: usize) -> Option<usize> {
    let n = candidates.len();
    let mut best: Option<usize> = None;
    for offset in 0..n {
        let i = (tie_start + offset) % n;
        let c = &candidates[i];
        let better = match best {
            None => true,
            Some(b) => {
                let b = &candidates[b];
                u64::from(c.load) * u64::from(b.weight) < u64::from(b.load) * u64::from(c.weight)
            }
        };
        if better {
            best = Some(i);
        }
    }
    best
}

/// Smooth weighted round robin (the nginx algorithm): every pick adds each weight to
/// its running score, takes the highest and subtracts the total. Over one cycle each
/// server is chosen `weight` times, interleaved rather than in bursts.
#[derive(Debug, Default, Clone)]
pub struct SmoothRoundRobin {
    scores: Vec<(String, i64)>,
}

impl SmoothRoundRobin {
    pub fn next(&mut self, candidates: &[Candidate<'_>]) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        // Scores follow servers by name so that a server leaving the candidate list
        // (down, drained) does not shift everybody else's position.
        self.scores
            .retain(|(name, _)| candidates.iter().any(|c| c.name == name));
        let total: i64 = candidates.iter().map(|c| i64::from(c.weight)).sum();
        let mut best: Option<(usize, i64)> = None;
        for (i, c) in candidates.iter().enumerate() {
            let score = match self.scores.iter_mut().find(|(name, _)| name == c.name) {
                Some((_, score)) => score,
                None => {
                    self.scores.push((c.name.to_string(), 0));
                    &mut self.scores.last_mut().expect("just pushed").1
                }
            };
            *score += i64::from(c.weight);
            if best.is_none_or(|(_, s)| *score > s) {
                best = Some((i, *score));
            }
        }
        let (chosen, _) = best?;
        if let Some((_, score)) = self
            .scores
            .iter_mut()
            .find(|(name, _)| name == candidates[chosen].name)
        {
            *score -= total;
        }
        Some(chosen)
    }
}

/// Weighted rendezvous (highest random weight) hashing of a client key. Each server
/// scores `-weight / ln(u)` with `u` a uniform hash of (server, key); the highest wins.
/// Adding or removing one of N servers only moves the clients that it wins or loses,
/// about 1/N of them, and every node computes the same answer.
pub fn rendezvous(key: &[u8], candidates: &[Candidate<'_>]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let hash = stable_hash(c.name.as_bytes(), key);
        // Map to (0, 1]: never 0, so ln() stays finite.
        let unit = ((hash >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let score = -f64::from(c.weight) / unit.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// FNV-1a over both inputs, finished with the splitmix64 mixer. Fixed forever: stick
/// decisions made by `source` must agree across nodes and releases, which std's hasher
/// does not promise.
pub fn stable_hash(a: &[u8], b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.iter().chain([0xffu8].iter()).chain(b) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands<'a>(spec: &[(&'a str, u32, u32)]) -> Vec<Candidate<'a>> {
        spec.iter()
            .map(|&(name, weight, load)| Candidate { name, weight, load })
            .collect()
    }

    #[test]
    fn leastconn_picks_lowest_load_per_weight() {
        let c = cands(&[("a", 1, 5), ("b", 1, 2), ("c", 1, 3)]);
        assert_eq!(leastconn(&c, 0), Some(1));
        // b: 4/2 = 2 beats a: 3/1 = 3.
        let c = cands(&[("a", 1, 3), ("b", 2, 4)]);
        assert_eq!(leastconn(&c, 0), Some(1));
        assert_eq!(leastconn(&[], 0), None);
    }

    #[test]
    fn leastconn_rotates_ties() {
        let c = cands(&[("a", 1, 0), ("b", 1, 0), ("c", 1, 0)]);
        let picks: Vec<_> = (0..3).map(|t| leastconn(&c, t).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2]);
    }

    #[test]
    fn leastconn_spreads_evenly_as_load_grows() {
        let mut loads = [0u32; 3];
        for t in 0..300 {
            let c = cands(&[("a", 1, loads[0]), ("b", 1, loads[1]), ("c", 1, loads[2])]);
            loads[leastconn(&c, t).unwrap()] += 1;
        }
        assert_eq!(loads, [100, 100, 100]);
    }

    #[test]
    fn smooth_round_robin_honours_weights_and_interleaves() {
        let mut rr = SmoothRoundRobin::default();
        let c = cands(&[("a", 5, 0), ("b", 1, 0), ("c", 1, 0)]);
        let picks: Vec<_> = (0..7).map(|_| rr.next(&c).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        let even = cands(&[("a", 1, 0), ("b", 1, 0), ("c", 1, 0)]);
        let mut rr = SmoothRoundRobin::default();
        let mut counts = [0; 3];
        for _ in 0..30 {
            counts[rr.next(&even).unwrap()] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn smooth_round_robin_survives_candidates_leaving() {
        let mut rr = SmoothRoundRobin::default();
        let all = cands(&[("a", 1, 0), ("b", 1, 0), ("c", 1, 0)]);
        rr.next(&all);
        let fewer = cands(&[("a", 1, 0), ("c", 1, 0)]);
        let picks: Vec<_> = (0..10)
            .map(|_| fewer[rr.next(&fewer).unwrap()].name)
            .collect();
        let a = picks.iter().filter(|n| **n == "a").count();
        assert!((4..=6).contains(&a), "{picks:?}");
        assert_eq!(rr.next(&[]), None);
    }

    fn owner(key: u32, servers: &[Candidate<'_>]) -> &'static str {
        let i = rendezvous(&key.to_be_bytes(), servers).unwrap();
        match servers[i].name {
            "s1" => "s1",
            "s2" => "s2",
            "s3" => "s3",
            "s4" => "s4",
            _ => unreachable!(),
        }
    }

    #[test]
    fn rendezvous_is_stable_and_moves_about_one_nth() {
        let three = cands(&[("s1", 1, 0), ("s2", 1, 0), ("s3", 1, 0)]);
        let four = cands(&[("s1", 1, 0), ("s2", 1, 0), ("s3", 1, 0), ("s4", 1, 0)]);
        let keys = 20_000u32;
        let mut counts = std::collections::HashMap::new();
        let mut moved = 0;
        for key in 0..keys {
            let before = owner(key, &three);
            let after = owner(key, &four);
            assert_eq!(before, owner(key, &three), "deterministic");
            *counts.entry(before).or_insert(0u32) += 1;
            if before != after {
                // Only moves *to* the new server are allowed.
                assert_eq!(after, "s4");
                moved += 1;
            }
        }
        let share = f64::from(moved) / f64::from(keys);
        assert!((0.22..0.28).contains(&share), "moved {share}");
        for (_, n) in counts {
            assert!((6_000..7_300).contains(&n), "uneven: {n}");
        }
        // Removing a server moves only its own clients.
        let two = cands(&[("s1", 1, 0), ("s3", 1, 0)]);
        for key in 0..2_000u32 {
            let before = owner(key, &three);
            if before != "s2" {
                assert_eq!(owner(key, &two), before);
            }
        }
    }

    #[test]
    fn rendezvous_respects_weights() {
        let c = cands(&[("s1", 3, 0), ("s2", 1, 0)]);
        let heavy = (0..10_000u32)
            .filter(|k| rendezvous(&k.to_be_bytes(), &c) == Some(0))
            .count();
        assert!((7_200..7_800).contains(&heavy), "{heavy}");
    }
}
