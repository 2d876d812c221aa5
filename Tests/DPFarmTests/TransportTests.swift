import Foundation
import XCTest
@testable import DPTransport

final class TransportTests: XCTestCase {
    func testWakePipeWakesAPollerOnceUntilDrained() throws {
        let pipe = try WakePipe()
        let poller = ZMQPoller()
        XCTAssertEqual(poller.add(fileDescriptor: pipe.readDescriptor), 0)
        XCTAssertEqual(try poller.poll(timeoutMilliseconds: 0), [[]])
        let woke = DispatchSemaphore(value: 0)
        let waker = Thread { pipe.wake(); pipe.wake(); woke.signal() }
        waker.start()
        XCTAssertEqual(try poller.poll(timeoutMilliseconds: 5000), [.readable], "woken from another thread")
        XCTAssertEqual(woke.wait(timeout: .now() + 5), .success)  // both wakes are in the pipe
        pipe.drain()
        XCTAssertEqual(try poller.poll(timeoutMilliseconds: 0), [[]], "drained: two wakes, one wake-up")
        pipe.wake()
        XCTAssertEqual(try poller.poll(timeoutMilliseconds: 0), [.readable])
    }

    var context: ZMQContext!

    override func setUpWithError() throws {
        context = try ZMQContext()
    }

    override func tearDown() {
        context.terminate()
        context = nil
    }

    /// A ROUTER bound to an ephemeral loopback port, and its resolved endpoint.
    func router(_ options: [ZMQOption] = []) throws -> (ZMQSocket, String) {
        let r = try context.socket(.router)
        try r.set(options)
        let endpoint = try r.bind("tcp://127.0.0.1:*")
        XCTAssertTrue(endpoint.hasPrefix("tcp://127.0.0.1:"), endpoint)
        XCTAssertNotEqual(endpoint, "tcp://127.0.0.1:*")
        return (r, endpoint)
    }

    func dealer(_ id: String, to endpoint: String, _ options: [ZMQOption] = []) throws -> ZMQSocket {
        let d = try context.socket(.dealer)
        try d.set(.routingID(Data(id.utf8)))
        try d.set(options)
        try d.connect(endpoint)
        return d
    }

    func testVersionIs434OrNewer() {
        let v = ZMQ.version
        XCTAssertGreaterThanOrEqual(v.major * 10_000 + v.minor * 100 + v.patch, 40_304, "libzmq \(v)")
    }

    func testRouterDealerRoundTripWithRoutingIDsAndMultipart() throws {
        let (r, endpoint) = try router([.routerMandatory(true), .receiveTimeout(milliseconds: 5000)])
        let a = try dealer("worker-a", to: endpoint, [.receiveTimeout(milliseconds: 5000)])
        let b = try dealer("worker-b", to: endpoint, [.receiveTimeout(milliseconds: 5000)])
        XCTAssertEqual(try a.routingID(), Data("worker-a".utf8))

        let big = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 31) })
        XCTAssertTrue(try a.send([Data("hello".utf8), Data(), big]))
        XCTAssertTrue(try b.send(Data("from b".utf8)))

        var got: [String: [Data]] = [:]
        for _ in 0..<2 {
            guard let msg = try r.receive() else { return XCTFail("router timed out") }
            got[String(decoding: msg[0], as: UTF8.self)] = Array(msg.dropFirst())
        }
        XCTAssertEqual(got["worker-a"], [Data("hello".utf8), Data(), big], "frames arrive whole and in order")
        XCTAssertEqual(got["worker-b"], [Data("from b".utf8)])

        // Replies are routed by frame 0.
        XCTAssertTrue(try r.send([Data("worker-b".utf8), Data("to b".utf8)]))
        XCTAssertTrue(try r.send([Data("worker-a".utf8), Data("to a".utf8), Data("part 2".utf8)]))
        XCTAssertEqual(try b.receive(), [Data("to b".utf8)])
        XCTAssertEqual(try a.receive(), [Data("to a".utf8), Data("part 2".utf8)])

        // ROUTER_MANDATORY: an unknown peer is an error, not a silent drop.
        XCTAssertThrowsError(try r.send([Data("nobody".utf8), Data("x".utf8)])) { error in
            XCTAssertTrue((error as? ZMQError)?.isHostUnreachable == true, "\(error)")
        }
    }

    func testNonBlockingReceiveReturnsNil() throws {
        let (r, _) = try router()
        XCTAssertNil(try r.receive(flags: .dontWait))
    }

    func testMaxMessageSizeDropsTheOversizedPeer() throws {
        let limit: Int64 = 1024
        let (r, endpoint) = try router([.maxMessageSize(limit), .receiveTimeout(milliseconds: 5000)])
        let big = try dealer("big", to: endpoint)
        let small = try dealer("small", to: endpoint)
        XCTAssertEqual(try r.maxMessageSize(), limit)

        XCTAssertTrue(try big.send(Data(repeating: 0xAB, count: Int(limit) * 4)))
        XCTAssertTrue(try small.send(Data("ok".utf8)))
        let first = try r.receive()
        XCTAssertEqual(first, [Data("small".utf8), Data("ok".utf8)], "only the in-limit message is delivered")

        // The oversized message never arrives (its connection was dropped).
        let poller = ZMQPoller()
        try poller.add(r)
        XCTAssertEqual(try poller.poll(timeoutMilliseconds: 300), [[]], "oversized message must be dropped")
    }

    func testPollerTimesOutThenSeesReadableSocket() throws {
        let (r, endpoint) = try router()
        let other = try context.socket(.pair)
        try other.bind("inproc://poller-test")
        let d = try dealer("d", to: endpoint)
        let poller = ZMQPoller()
        XCTAssertEqual(try poller.add(r), 0)
        XCTAssertEqual(try poller.add(other), 1)

        let start = Date()
        let idle = try poller.poll(timeoutMilliseconds: 50)
        let waited = Date().timeIntervalSince(start)
        XCTAssertEqual(idle, [[], []])
        XCTAssertGreaterThanOrEqual(waited, 0.045, "poll returned before its timeout")

        XCTAssertTrue(try d.send(Data("ping".utf8)))
        let ready = try poller.poll(timeoutMilliseconds: 5000)
        XCTAssertEqual(ready, [.readable, []])
        XCTAssertEqual(try r.receive(flags: .dontWait)?.last, Data("ping".utf8))
        XCTAssertEqual(try poller.poll(timeoutMilliseconds: 0), [[], []], "drained socket is not readable")
    }

    func testPollerOnClosedSocketThrowsInsteadOfCrashing() throws {
        let s = try context.socket(.pair)
        let poller = ZMQPoller()
        try poller.add(s)
        s.close()
        XCTAssertThrowsError(try poller.poll(timeoutMilliseconds: 0))
        XCTAssertThrowsError(try s.send(Data([1])))
    }

    func testPairOverInprocAndPubSub() throws {
        let a = try context.socket(.pair)
        try a.bind("inproc://pair")
        let b = try context.socket(.pair)
        try b.connect("inproc://pair")
        XCTAssertTrue(try a.send([Data([1]), Data([2, 3])]))
        XCTAssertEqual(try b.receive(), [Data([1]), Data([2, 3])])

        let pub = try context.socket(.pub)
        try pub.bind("inproc://pub")
        let sub = try context.socket(.sub)
        try sub.set([.subscribe(Data("job.".utf8)), .receiveTimeout(milliseconds: 5000)])
        try sub.connect("inproc://pub")
        // inproc connects synchronously, but the subscription travels asynchronously: resend
        // until it lands (bounded by the receive timeout per try).
        var received: [Data]?
        for _ in 0..<50 where received == nil {
            try pub.send(Data("other.1".utf8))
            try pub.send(Data("job.7".utf8))
            received = try sub.receive(flags: .dontWait)
            if received == nil { _ = try ZMQPoller().poll(timeoutMilliseconds: 10) }
        }
        XCTAssertEqual(received, [Data("job.7".utf8)], "the filter lets only job.* through")
    }

    func testOptionsAndErrorsNameTheProblem() throws {
        let s = try context.socket(.dealer)
        XCTAssertEqual(try s.get(.linger), 0, "sockets start with linger 0")
        try s.set([.linger(milliseconds: 100), .sendHighWaterMark(10), .receiveHighWaterMark(20), .immediate(true),
                   .reconnectInterval(milliseconds: 50), .reconnectIntervalMax(milliseconds: 2000),
                   .heartbeatInterval(milliseconds: 1000), .heartbeatTimeout(milliseconds: 5000),
                   .heartbeatTTL(milliseconds: 5000)])
        XCTAssertEqual(try s.get(.linger), 100)
        XCTAssertEqual(try s.get(.sendHighWaterMark), 10)
        XCTAssertEqual(try s.get(.heartbeatInterval), 1000)
        XCTAssertEqual(try s.get(.type), ZMQSocketType.dealer.rawValue)
        XCTAssertThrowsError(try s.connect("nonsense://x")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("zmq_connect") && text.contains("nonsense://x"), text)
        }
        let (r, endpoint) = try router()
        _ = r
        let other = try context.socket(.router)
        XCTAssertThrowsError(try other.bind(endpoint)) { error in
            XCTAssertTrue("\(error)".contains("Address already in use"), "\(error)")
        }
        XCTAssertThrowsError(try s.set(.curveServerKey("short")))
    }

    func testCurveEncryptedRoundTrip() throws {
        try XCTSkipUnless(ZMQ.has("curve"), "libzmq built without CURVE")
        let server = try ZMQCurveKeyPair.generate()
        let client = try ZMQCurveKeyPair.generate()
        XCTAssertEqual(server.publicKey.count, 40)
        let (r, endpoint) = try router([.curveServer(true), .curveSecretKey(server.secretKey),
                                        .receiveTimeout(milliseconds: 5000)])
        let d = try dealer("c", to: endpoint, [.curveServerKey(server.publicKey), .curvePublicKey(client.publicKey),
                                               .curveSecretKey(client.secretKey)])
        XCTAssertTrue(try d.send(Data("secret".utf8)))
        XCTAssertEqual(try r.receive(), [Data("c".utf8), Data("secret".utf8)])
    }

    func testContextShutdownWakesABlockedReceiver() throws {
        let ctx = try ZMQContext()
        let s = try ctx.socket(.pair)
        try s.bind("inproc://blocked")
        let woke = expectation(description: "receiver woke with ETERM")
        let thread = Thread {
            do {
                _ = try s.receive()
            } catch let error as ZMQError where error.isContextTerminated {
                s.close()
                woke.fulfill()
            } catch {
                XCTFail("unexpected \(error)")
            }
        }
        thread.start()
        // Give the thread a moment to block; shutdown works whether or not it is blocked yet.
        Thread.sleep(forTimeInterval: 0.05)
        ctx.shutdown()
        wait(for: [woke], timeout: 5)
        let done = expectation(description: "terminate returned")
        DispatchQueue.global().async {
            ctx.terminate()
            done.fulfill()
        }
        wait(for: [done], timeout: 5)
    }
}
