// Nearest-neighbour 2x upsampling and 2x2 max pooling on [N, C, H, W].

/// Nearest 2x upsampling (F.interpolate(scale_factor=2, mode="nearest")): [N, C, H, W] -> [N, C, 2H, 2W].
public func upsampleNearest2x(_ x: Tensor) -> Tensor {
    precondition(x.rank == 4, "upsampleNearest2x: input must be [N, C, H, W], got \(x.shape)")
    let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    let probe = OpProfile.begin(.layout)
    defer { probe?.end() }
    return Tensor(overwriting: [n, c, 2 * h, 2 * w]) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { pxb in
            let px = pxb.baseAddress!
            parallelFor(n * c, work: x.count * 4) { plane in
                let src = px + plane * h * w, dst = po + plane * 4 * h * w
                for y in 0..<h {
                    let s = src + y * w, d0 = dst + 2 * y * 2 * w
                    for xx in 0..<w { let v = s[xx]; d0[2 * xx] = v; d0[2 * xx + 1] = v }
                    (d0 + 2 * w).update(from: d0, count: 2 * w)
                }
            }
        }
    }
}

/// 2x2 max pooling, stride 2 (F.max_pool2d(x, 2)): [N, C, H, W] -> [N, C, H/2, W/2] (floor).
public func maxPool2x2(_ x: Tensor) -> Tensor {
    precondition(x.rank == 4, "maxPool2x2: input must be [N, C, H, W], got \(x.shape)")
    let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    let ho = h / 2, wo = w / 2
    return Tensor(shape: [n, c, ho, wo]) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { pxb in
            let px = pxb.baseAddress!
            parallelFor(n * c, work: x.count) { plane in
                let src = px + plane * h * w, dst = po + plane * ho * wo
                for y in 0..<ho {
                    let r0 = src + 2 * y * w, r1 = r0 + w, d = dst + y * wo
                    for xx in 0..<wo {
                        d[xx] = max(max(r0[2 * xx], r0[2 * xx + 1]), max(r1[2 * xx], r1[2 * xx + 1]))
                    }
                }
            }
        }
    }
}
