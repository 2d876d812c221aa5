@testable import DPCoordinator
import XCTest

/// The cap on peer-caused log lines (issue 12, item 7), with the time given by the test.
final class LogLimiterTests: XCTestCase {
    func testAtMostTheWindowsLinesThenACountOfTheRest() {
        var limiter = LogLimiter(linesPerWindow: 3, windowMilliseconds: 1000)
        var logged: [String] = []
        for i in 0..<10 {
            if let line = limiter.line("refused \(i)", nowMilliseconds: 5_000 + Int64(i)) { logged.append(line) }
        }
        XCTAssertEqual(logged, ["refused 0", "refused 1", "refused 2"])
        // The next window's first line says how many were left out, once.
        XCTAssertEqual(limiter.line("refused 10", nowMilliseconds: 6_000),
                       "refused 10 [7 more line(s) like this were not logged in the 1 s before]")
        XCTAssertEqual(limiter.line("refused 11", nowMilliseconds: 6_001), "refused 11")
    }

    func testTextOfASuppressedLineIsNotBuilt() {
        var limiter = LogLimiter(linesPerWindow: 1, windowMilliseconds: 1000)
        var built = 0
        func text() -> String { built += 1; return "x" }
        _ = limiter.line(text(), nowMilliseconds: 0)
        _ = limiter.line(text(), nowMilliseconds: 1)
        _ = limiter.line(text(), nowMilliseconds: 2)
        XCTAssertEqual(built, 1)
    }

    func testAClockGoingBackStartsANewWindow() {
        var limiter = LogLimiter(linesPerWindow: 1, windowMilliseconds: 1000)
        XCTAssertNotNil(limiter.line("a", nowMilliseconds: 10_000))
        XCTAssertNil(limiter.line("b", nowMilliseconds: 10_001))
        XCTAssertEqual(limiter.line("c", nowMilliseconds: 9_000),
                       "c [1 more line(s) like this were not logged in the 1 s before]")
    }
}
