@testable import DPCoordinator
import DPFileKit
import Foundation
import XCTest

/// The one chunked-upload receiver (model files and job inputs) on a real temp file: order, bounds,
/// restart at offset 0, the size + SHA-256 check of the last chunk. Hostile chunks next to each rule.
final class ChunkedUploadTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("chunks")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    let content = Data((0 ..< 1000).map { UInt8($0 % 251) })

    func receive(_ offset: UInt64, _ data: Data, last: Bool = false, _ received: inout UInt64?,
                 file: URL) throws -> ChunkedUpload.Outcome {
        try ChunkedUpload.receive(offset: offset, data: data, last: last, into: InputFileUpload(url: file),
                                  received: &received, size: UInt64(content.count), sha256: FileDigest.sha256(content),
                                  label: "input 'a.png'", job: 3)
    }

    func testChunksInOrderThenVerified() throws {
        let file = root.appendingPathComponent("upload")
        var received: UInt64?
        XCTAssertEqual(try receive(0, content[0 ..< 400], &received, file: file), .stored(nextOffset: 400, complete: false))
        XCTAssertEqual(try receive(400, content[400...], last: true, &received, file: file),
                       .stored(nextOffset: 1000, complete: true))
        XCTAssertEqual(try Data(contentsOf: file), content)
    }

    func testOutOfOrderAndOversizedChunksAreRefused() throws {
        let file = root.appendingPathComponent("upload")
        var received: UInt64?
        // Nothing received yet: only offset 0 is accepted.
        XCTAssertEqual(try receive(400, content[400 ..< 500], &received, file: file),
                       .refused(.badRequest, "job 3: input 'a.png': chunk of 100 bytes at offset 400, expected offset 0 within 1000 bytes"))
        _ = try receive(0, content[0 ..< 400], &received, file: file)
        // A gap, a repeat and an offset near the top of UInt64 (no overflow, no trap).
        for offset: UInt64 in [500, 100, .max - 10] {
            guard case .refused(.badRequest, _) = try receive(offset, content[0 ..< 100], &received, file: file) else {
                return XCTFail("offset \(offset) must be refused")
            }
        }
        // Past the declared size.
        XCTAssertEqual(try receive(400, Data(count: 601), &received, file: file),
                       .refused(.badRequest, "job 3: input 'a.png': chunk of 601 bytes at offset 400, expected offset 400 within 1000 bytes"))
        XCTAssertEqual(received, 400, "refused chunks store nothing")
        XCTAssertEqual(try Data(contentsOf: file).count, 400)
    }

    func testWrongFileIsDroppedAndMustStartOver() throws {
        let file = root.appendingPathComponent("upload")
        var received: UInt64?
        var wrong = content
        wrong[7] ^= 1
        _ = try receive(0, wrong[0 ..< 500], &received, file: file)
        guard case .refused(.checksumMismatch, let message) = try receive(500, wrong[500...], last: true, &received, file: file) else {
            return XCTFail("a file that does not match must be refused")
        }
        XCTAssertTrue(message.contains("send it again from offset 0"), message)
        XCTAssertNil(received)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path))
        // Continuing where it stopped is refused; from offset 0 it goes through.
        guard case .refused(.badRequest, _) = try receive(500, content[500...], last: true, &received, file: file) else {
            return XCTFail("must start over at offset 0")
        }
        XCTAssertEqual(try receive(0, content, last: true, &received, file: file), .stored(nextOffset: 1000, complete: true))
    }

    func testOffsetZeroStartsTheFileOver() throws {
        let file = root.appendingPathComponent("upload")
        var received: UInt64?
        _ = try receive(0, Data(repeating: 9, count: 700), &received, file: file)
        XCTAssertEqual(try receive(0, content, last: true, &received, file: file), .stored(nextOffset: 1000, complete: true))
        XCTAssertEqual(try Data(contentsOf: file), content)
    }
}
