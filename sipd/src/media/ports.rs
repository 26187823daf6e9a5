//! The relay's UDP ports (`rtp_ports=`): even ports for RTP, each with the
//! odd port above for RTCP, handed out oldest-released first (a port just
//! freed is not reused at once, so late packets of the last call do not
//! reach the next one). Bounded by the range; pure (binding is the relay's).

use std::collections::{HashSet, VecDeque};

#[derive(Debug)]
pub struct Ports {
    range: (u16, u16),
    free: VecDeque<u16>,
    used: HashSet<u16>,
}

/// The even ports of `lo..=hi` that have their odd neighbour in range.
fn pairs(lo: u16, hi: u16) -> impl Iterator<Item = u16> {
    let first = u32::from(lo) + u32::from(lo % 2);
    (first..u32::from(hi)).step_by(2).map(|p| p as u16)
}

impl Ports {
    pub fn new(range: (u16, u16)) -> Ports {
        Ports {
            range,
            free: pairs(range.0, range.1).collect(),
            used: HashSet::new(),
        }
    }

    /// Follow a new `rtp_ports=`: ports in use stay in use until released
    /// (a port outside the new range then goes away).
    pub fn set_range(&mut self, range: (u16, u16)) {
        if range == self.range {
            return;
        }
        self.range = range;
        self.free = pairs(range.0, range.1)
            .filter(|p| !self.used.contains(p))
            .collect();
    }

    /// An RTP port (RTCP on the one above), or `None` when all are taken.
    pub fn take(&mut self) -> Option<u16> {
        let p = self.free.pop_front()?;
        self.used.insert(p);
        Some(p)
    }

    /// Give a port back (unknown ports are ignored).
    pub fn give(&mut self, p: u16) {
        if self.used.remove(&p) && p >= self.range.0 && p < self.range.1 {
            self.free.push_back(p);
        }
    }

    /// Take a port out of service (it could not be bound): it is neither
    /// free nor counted in use.
    pub fn retire(&mut self, p: u16) {
        self.used.remove(&p);
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_pairs_in_range_oldest_first() {
        let mut p = Ports::new((20001, 20008));
        // 20002/3, 20004/5, 20006/7 (20008 has no 20009).
        assert_eq!(p.available(), 3);
        assert_eq!(p.take(), Some(20002));
        assert_eq!(p.take(), Some(20004));
        p.give(20002);
        assert_eq!(p.take(), Some(20006));
        assert_eq!(p.take(), Some(20002));
        assert_eq!(p.take(), None);
        assert_eq!(p.in_use(), 4 - 1);
        p.give(1234);
        p.give(20004);
        p.give(20004);
        assert_eq!(p.in_use(), 2);
        assert_eq!(p.available(), 1);
    }

    #[test]
    fn range_change_keeps_ports_in_use() {
        let mut p = Ports::new((20000, 20003));
        assert_eq!(p.take(), Some(20000));
        p.set_range((30000, 30005));
        assert_eq!(p.available(), 3);
        assert_eq!(p.in_use(), 1);
        // Outside the new range: released, not reused.
        p.give(20000);
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.available(), 3);
        let a = p.take().unwrap();
        p.retire(a);
        assert_eq!((p.in_use(), p.available()), (0, 2));
    }
}
