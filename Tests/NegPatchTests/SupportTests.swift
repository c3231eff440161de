import Foundation
import Testing
@testable import NegPatch

@Suite struct XXH64Tests {
    // Published test vectors of the reference implementation (xxhsum / python-xxhash).
    @Test(arguments: [
        ("", UInt64(0xEF46_DB37_51D8_E999)),
        ("a", 0xD24E_C4F1_A98C_6E5B),
        ("abc", 0x44BC_2CF5_AD77_0999),
        ("Nobody inspects the spammish repetition", 0xFBCE_A83C_8A37_8BF1),
    ])
    func matchesReferenceVectors(_ text: String, _ expected: UInt64) {
        #expect(XXH64.hash(text) == expected)
    }

    @Test func hexRoundTrips() {
        #expect(XXH64.hex(0xAB) == "00000000000000ab")
        #expect(XXH64.parseHex("00000000000000ab") == 0xAB)
        #expect(XXH64.parseHex("00000000000000AB") == nil)
        #expect(XXH64.parseHex("ab") == nil)
    }
}

@Suite struct StrictJSONTests {
    @Test func parsesNestedValuesExactly() throws {
        let value = try StrictJSON.parse(Array(#" {"a": [1, -2.5e3, true, null], "b": "x\u00e9\ud83d\ude00\n"} "#.utf8))
        #expect(value["a"] == .array([.number("1"), .number("-2.5e3"), .bool(true), .null]))
        #expect(value["b"]?.string == "xé😀\n")
    }

    @Test(arguments: [
        #"{"a": 1, "a": 2}"#, #"{"a": 1,}"#, #"[1 2]"#, #""\ud800""#, #"01"#, #"{"a": "\u0001"}"#.replacingOccurrences(of: "\\u0001", with: "\u{01}"),
        String(repeating: "[", count: 100) + String(repeating: "]", count: 100), #"{"a": 1} x"#,
    ])
    func rejectsInvalidDocuments(_ text: String) {
        #expect(throws: StrictJSON.ParseError.self) { try StrictJSON.parse(Array(text.utf8)) }
    }

    @Test func canonicalEncodingSortsKeysAndRoundTrips() throws {
        let value = JSONValue.object([("b", .int(2)), ("a", .string("q\"\\\n\u{01}")), ("c", .double(0.05))])
        let bytes = CanonicalJSON.encode(value)
        #expect(String(decoding: bytes, as: UTF8.self) == #"{"a":"q\"\\\n\u0001","b":2,"c":0.05}"#)
        let back = try StrictJSON.parse(bytes)
        #expect(back["a"] == value["a"])
        #expect(back["c"]?.double == 0.05)
    }

    @Test func nonNegativeIntRejectsEverythingButPlainDigits() {
        #expect(JSONValue.number("12").nonNegativeInt == 12)
        #expect(JSONValue.number("-1").nonNegativeInt == nil)
        #expect(JSONValue.number("1.0").nonNegativeInt == nil)
        #expect(JSONValue.number("1e3").nonNegativeInt == nil)
        #expect(JSONValue.number("012").nonNegativeInt == nil)
        #expect(JSONValue.number("99999999999999999999").nonNegativeInt == nil)
    }
}

@Suite struct AtomicOutputTests {
    @Test func leavesTheDestinationUntouchedUntilCommit() throws {
        let folder = TemporaryFolder()
        let path = folder.file("out.bin")
        writeBytes(path, [1, 2, 3])
        do {
            let output = try AtomicOutput(destination: path)
            try output.write([9, 9])
            #expect(readBytes(path) == [1, 2, 3])
            output.discard()
        }
        #expect(readBytes(path) == [1, 2, 3])
        #expect(folder.contents == ["out.bin"])
        let output = try AtomicOutput(destination: path)
        try output.write([7])
        try output.commit()
        #expect(readBytes(path) == [7])
        #expect(folder.contents == ["out.bin"])
    }

    @Test func refusesToReplaceAFolderThatHoldsFiles() throws {
        let folder = TemporaryFolder()
        try FileManager.default.createDirectory(atPath: folder.file("dest"), withIntermediateDirectories: false)
        writeBytes(folder.file("dest/keep.txt"), [1])
        #expect(throws: NegPatchError.self) { try AtomicFolder(destination: folder.file("dest")) }
        #expect(readBytes(folder.file("dest/keep.txt")) == [1])
    }

    /// `-o /dev/null` once renamed a regular file over the device node. Only regular files
    /// are replaced; a pipe (standing in for a device, which a test must not risk) stays.
    @Test func refusesToReplaceWhatIsNotARegularFile() throws {
        let folder = TemporaryFolder()
        let fifo = folder.file("pipe")
        #expect(mkfifo(fifo, 0o644) == 0)
        let error = #expect(throws: NegPatchError.self) { try AtomicOutput(destination: fifo) }
        #expect(error?.message.contains("not a regular file") == true)
        var info = stat()
        #expect(stat(fifo, &info) == 0 && (info.st_mode & S_IFMT) == S_IFIFO)
        #expect(folder.contents == ["pipe"])
    }
}

@Suite struct XXH64HasherTests {
    @Test(arguments: [0, 1, 31, 32, 33, 100, 1000])
    func piecewiseEqualsOneShot(_ length: Int) {
        var rng = SeededGenerator(seed: UInt64(length))
        let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let expected = XXH64.hash(bytes)
        for pieceSize in [1, 3, 7, 32, 33, 64] {
            var hasher = XXH64.Hasher()
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < length {
                    let count = min(pieceSize, length - offset)
                    hasher.update(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + count)]))
                    offset += count
                }
            }
            #expect(hasher.finalize() == expected, "pieces of \(pieceSize)")
        }
    }
}
