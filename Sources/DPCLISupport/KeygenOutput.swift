import DPTransport
import Foundation

/// `dp-coord keygen NAME` and `dp-worker keygen NAME`: makes the CURVE key pair and prints where it went.
public enum KeygenOutput {
    public static func run(_ name: String) throws {
        do {
            let made = try CurveKeyFile.generate(base: (name as NSString).expandingTildeInPath)
            print("secret key  \(made.secretPath)  (mode 0600: keep it on this machine)")
            print("public key  \(made.publicPath)  \(made.pair.publicKey)")
        } catch {
            throw CLIError("\(error)")
        }
    }
}
