import CZstd

/// zstd frames as the patch formats use them: one frame per part, with the content size
/// and the content checksum recorded in the frame header.
public enum Zstd {
    /// The default compression level of patch parts.
    public static let defaultLevel: Int32 = 3

    /// Compression contexts kept between calls: a context keeps its workspace, so block
    /// after block compresses without allocating and clearing a new one.
    private static let compressors = Pool<OpaquePointer>(
        make: {
            guard let context = ZSTD_createCCtx() else {
                throw NegPatchError(.io, file: nil, "zstd: cannot allocate a compression context")
            }
            return context
        },
        destroy: { ZSTD_freeCCtx($0) })

    /// Compresses `source` into one frame at `level`.
    public static func compress(_ source: UnsafeRawBufferPointer, level: Int32) throws -> [UInt8] {
        try compressors.withResource { context in
            ZSTD_CCtx_reset(context, ZSTD_reset_session_and_parameters)
            ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
            ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
            ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1)
            let bound = ZSTD_compressBound(source.count)
            var failure: Int?
            let output = [UInt8](unsafeUninitializedCapacity: bound) { out, initialized in
                let written = ZSTD_compress2(context, out.baseAddress, bound,
                                             source.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, source.count)
                if ZSTD_isError(written) != 0 {
                    failure = written
                    initialized = 0
                } else {
                    initialized = written
                }
            }
            if let failure {
                throw NegPatchError(.io, file: nil, "zstd compression failed: \(String(cString: ZSTD_getErrorName(failure)))")
            }
            return output
        }
    }

    /// Decompresses one frame that must hold exactly `expectedSize` bytes into
    /// `destination` (which has room for at least that many). Verifies the frame's declared
    /// content size before decompressing and its content checksum after.
    public static func decompress(_ frame: UnsafeRawBufferPointer, expectedSize: Int,
                                  into destination: UnsafeMutableRawPointer) throws {
        try checkFrame(frame, expectedSize: expectedSize)
        let written = ZSTD_decompress(expectedSize == 0 ? UnsafeMutableRawPointer(bitPattern: 1) : destination,
                                      expectedSize, frame.baseAddress!, frame.count)
        if ZSTD_isError(written) != 0 {
            throw ZstdError("zstd: \(String(cString: ZSTD_getErrorName(written)))")
        }
        guard written == expectedSize else {
            throw ZstdError("zstd frame decompressed to \(written) bytes, expected \(expectedSize)")
        }
    }

    /// Checks a frame's header without decompressing: the magic, a content checksum, a
    /// declared content size equal to `expectedSize`, and a frame that fills `frame`
    /// exactly. Readers call it before allocating the output, so a frame that claims more
    /// than its index allows costs no memory.
    public static func checkFrame(_ frame: UnsafeRawBufferPointer, expectedSize: Int) throws {
        guard let start = frame.baseAddress, frame.count >= 5 else { throw ZstdError("not a zstd frame") }
        // Magic 0xFD2FB528, then the frame header descriptor, whose bit 2 says the frame
        // carries a content checksum: the format requires one on every part.
        guard UInt32(littleEndian: start.loadUnaligned(as: UInt32.self)) == 0xFD2F_B528 else {
            throw ZstdError("not a zstd frame")
        }
        guard start.load(fromByteOffset: 4, as: UInt8.self) & 0x04 != 0 else {
            throw ZstdError("zstd frame lacks its content checksum")
        }
        let declared = ZSTD_getFrameContentSize(start, frame.count)
        if declared == czstd_contentsize_error() { throw ZstdError("not a zstd frame") }
        if declared == czstd_contentsize_unknown() { throw ZstdError("zstd frame does not declare its size") }
        guard declared == UInt64(expectedSize) else {
            throw ZstdError("zstd frame holds \(declared) bytes, the index says \(expectedSize)")
        }
        let frameSize = ZSTD_findFrameCompressedSize(start, frame.count)
        if ZSTD_isError(frameSize) != 0 || frameSize != frame.count {
            throw ZstdError("zstd frame does not fill its part exactly")
        }
    }
}

/// A zstd frame that could not be decoded; the caller adds the file, tensor and block.
public struct ZstdError: Error, CustomStringConvertible {
    /// What was wrong with the frame.
    public let description: String
    init(_ description: String) { self.description = description }
}
