//! A static byte trie from piece bytes to ids, for prefix walks (Unigram, WordPiece).
//!
//! Nodes are stored in breadth-first order and the children of a node are consecutive,
//! sorted by label, with the label inside the node record: one step of a walk scans a
//! small contiguous block, so a walk costs about one cache miss per byte.

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    first_child: u32,
    /// id of the key ending here, or NONE
    id: u32,
    n_children: u16,
    label: u8,
}

#[derive(Debug, Clone)]
pub struct Trie {
    /// node 0 is the root
    nodes: Vec<Node>,
    /// child of the root for each byte, or NONE
    root: Box<[u32; 256]>,
}

impl Trie {
    /// Builds from (key, id) pairs; empty keys are ignored; for a repeated key the first
    /// pair wins.
    pub fn new<'a>(keys: impl IntoIterator<Item = (&'a [u8], u32)>) -> Self {
        let mut entries: Vec<(&[u8], u32, usize)> = keys
            .into_iter()
            .filter(|(k, _)| !k.is_empty())
            .enumerate()
            .map(|(order, (k, id))| (k, id, order))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0).then(a.2.cmp(&b.2)));
        entries.dedup_by(|later, first| later.0 == first.0);

        let mut nodes = vec![Node {
            first_child: 0,
            id: NONE,
            n_children: 0,
            label: 0,
        }];
        // breadth-first: (node, depth, range of entries sharing the node's prefix)
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize, 0usize, entries.len())]);
        while let Some((node, depth, mut lo, hi)) = queue.pop_front() {
            if lo < hi && entries[lo].0.len() == depth {
                nodes[node].id = entries[lo].1;
                lo += 1;
            }
            nodes[node].first_child = nodes.len() as u32;
            let mut i = lo;
            while i < hi {
                let label = entries[i].0[depth];
                let mut j = i + 1;
                while j < hi && entries[j].0[depth] == label {
                    j += 1;
                }
                let child = nodes.len();
                nodes.push(Node {
                    first_child: 0,
                    id: NONE,
                    n_children: 0,
                    label,
                });
                queue.push_back((child, depth + 1, i, j));
                i = j;
            }
            nodes[node].n_children = (nodes.len() as u32 - nodes[node].first_child) as u16;
        }
        let mut root = Box::new([NONE; 256]);
        let r = nodes[0];
        for c in r.first_child..r.first_child + r.n_children as u32 {
            root[nodes[c as usize].label as usize] = c;
        }
        Trie { nodes, root }
    }

    #[inline]
    fn child(&self, node: u32, byte: u8) -> u32 {
        if node == 0 {
            return self.root[byte as usize];
        }
        let n = self.nodes[node as usize];
        let first = n.first_child as usize;
        let kids = &self.nodes[first..first + n.n_children as usize];
        if kids.len() <= 16 {
            kids.iter()
                .position(|k| k.label == byte)
                .map_or(NONE, |k| (first + k) as u32)
        } else {
            kids.binary_search_by_key(&byte, |k| k.label)
                .map_or(NONE, |k| (first + k) as u32)
        }
    }

    /// Calls `f(end, id)` for every key that is a prefix of `data[start..]`, shortest first
    /// (`end` is the offset in `data` just after the key).
    #[inline]
    pub fn for_each_prefix(&self, data: &[u8], start: usize, mut f: impl FnMut(usize, u32)) {
        let mut node = 0u32;
        for (i, &b) in data[start..].iter().enumerate() {
            node = self.child(node, b);
            if node == NONE {
                return;
            }
            let id = self.nodes[node as usize].id;
            if id != NONE {
                f(start + i + 1, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let keys: Vec<(&[u8], u32)> = vec![
            (b"a", 0),
            (b"abc", 1),
            (b"abc", 2),
            (b"", 3),
            (b"b", 4),
            (b"abd", 5),
        ];
        let t = Trie::new(keys);
        let mut got = vec![];
        t.for_each_prefix(b"xabcd", 1, |e, id| got.push((e, id)));
        assert_eq!(got, vec![(2, 0), (4, 1)]); // duplicate "abc": first wins
        got.clear();
        t.for_each_prefix(b"abd", 0, |e, id| got.push((e, id)));
        assert_eq!(got, vec![(1, 0), (3, 5)]);
        got.clear();
        t.for_each_prefix(b"", 0, |e, id| got.push((e, id)));
        assert!(got.is_empty());
    }

    #[test]
    fn wide_nodes_use_binary_search() {
        let keys: Vec<Vec<u8>> = (0..=255u8).flat_map(|a| [vec![a], vec![7, a]]).collect();
        let t = Trie::new(keys.iter().enumerate().map(|(i, k)| (&k[..], i as u32)));
        for a in 0..=255u8 {
            let mut got = vec![];
            t.for_each_prefix(&[7, a], 0, |e, id| got.push((e, id)));
            assert_eq!(got, vec![(1, 14), (2, 2 * a as u32 + 1)]);
        }
    }
}
