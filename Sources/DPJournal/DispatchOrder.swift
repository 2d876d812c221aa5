/// The order a job's frames go out in (`--order`).
public enum DispatchOrder: String, Sendable, CaseIterable {
    /// Ascending pose frame number.
    case frame
    /// First, last, middle, then the middles of the halves, breadth-first: a coarse preview of
    /// the whole clip early. 9 frames -> indices 0, 8, 4, 2, 6, 1, 3, 5, 7.
    case preview

    /// Indices 0..<count (into the job's frames sorted ascending) in dispatch order.
    public func sequence(count: Int) -> [Int] {
        guard count > 0 else { return [] }
        switch self {
        case .frame:
            return Array(0..<count)
        case .preview:
            if count == 1 { return [0] }
            var out = [0, count - 1]
            out.reserveCapacity(count)
            // Breadth-first bisection of the open intervals (lo, hi).
            var queue: [(Int, Int)] = [(0, count - 1)]
            var head = 0
            while head < queue.count {
                let (lo, hi) = queue[head]
                head += 1
                guard hi - lo > 1 else { continue }
                let mid = (lo + hi) / 2
                out.append(mid)
                queue.append((lo, mid))
                queue.append((mid, hi))
            }
            return out
        }
    }

    /// rank[i] = position of index i in `sequence(count:)` (what the journal stores per frame).
    public func ranks(count: Int) -> [Int] {
        var ranks = [Int](repeating: 0, count: count)
        for (position, index) in sequence(count: count).enumerated() { ranks[index] = position }
        return ranks
    }
}
