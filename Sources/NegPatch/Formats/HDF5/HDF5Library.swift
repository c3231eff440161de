import CHDF5
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure reported by the HDF5 library, or a file object that is not what the layout
/// requires. Callers turn it into a `NegPatchError` naming the file and the object.
struct HDF5Failure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// The one door to the HDF5 C library.
///
/// HDF5 keeps global state and serialises its calls behind a lock of its own, so NegPatch
/// makes every HDF5 call inside `locked`, from whichever thread, one call sequence at a
/// time; numeric work (packing, popcounts, unpacking) happens outside it. Inside `locked`,
/// HDF5's own error printing is off: failures become `HDF5Failure`s carrying the library's
/// most specific message.
enum HDF5Library {
    nonisolated(unsafe) private static let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        // Recursive, so releasing a reader or writer inside a locked section cannot deadlock.
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
        return mutex
    }()

    /// libhdf5 registers an exit handler that closes every file still open. A file whose
    /// close failed (a full disk while flushing) stays registered half torn down, and that
    /// handler then crashed the process inside libhdf5 after the error had been reported.
    /// NegPatch closes what it opens and discards what it could not finish, so the handler
    /// is turned off, before the library's first call.
    private static let turnOffExitHandler: Void = { _ = H5dont_atexit() }()

    /// Runs `body` holding the process-wide HDF5 lock (reentrant on the same thread).
    static func locked<T>(_ body: () throws -> T) rethrows -> T {
        _ = turnOffExitHandler
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        // The automatic error printer is per thread in thread-safe builds: silence it for
        // the calling thread every time.
        H5Eset_auto2(chdf5_e_default(), nil, nil)
        return try body()
    }

    /// The innermost message on HDF5's error stack (what actually went wrong, e.g. "file
    /// signature not found"), and clears the stack. Call inside `locked`.
    static func takeErrorMessage() -> String {
        var message = ""
        withUnsafeMutablePointer(to: &message) { pointer in
            _ = H5Ewalk2(chdf5_e_default(), H5E_WALK_UPWARD, { position, description, client in
                guard position == 0, let description, let client, let text = description.pointee.desc else { return 0 }
                client.assumingMemoryBound(to: String.self).pointee = String(cString: text)
                return 0
            }, pointer)
        }
        H5Eclear2(chdf5_e_default())
        // Some of libhdf5's messages span lines (a failed write reports its time stamp with
        // a line break); errors are one line.
        return message.split(whereSeparator: \.isNewline)
            .map { line in String(line.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed()) }
            .filter { !$0.isEmpty }.joined(separator: " ")
    }

    /// Throws `HDF5Failure("<what> failed (HDF5: <message>)")` when `status` is negative.
    static func check(_ status: herr_t, _ what: @autoclosure () -> String) throws {
        if status < 0 { throw failure(what()) }
    }

    /// Returns `id` or throws when it is negative (an HDF5 error).
    static func check(id: hid_t, _ what: @autoclosure () -> String) throws -> hid_t {
        if id < 0 { throw failure(what()) }
        return id
    }

    /// A failure for `what`, with HDF5's own explanation when it has one.
    static func failure(_ what: String) -> HDF5Failure {
        let detail = takeErrorMessage()
        return HDF5Failure(message: detail.isEmpty ? "\(what) failed" : "\(what) failed (HDF5: \(detail))")
    }
}

/// HDF5 objects, types and attributes as the patch layout uses them. Every function must be
/// called inside `HDF5Library.locked`; every identifier returned must be closed by the caller.
enum HDF5 {
    // MARK: Types

    /// A variable-length UTF-8 string type (h5py's `str`).
    static func stringType() throws -> hid_t {
        let type = try HDF5Library.check(id: H5Tcopy(chdf5_t_c_s1()), "creating a string type")
        guard H5Tset_size(type, chdf5_t_variable()) >= 0, H5Tset_cset(type, H5T_CSET_UTF8) >= 0 else {
            H5Tclose(type)
            throw HDF5Library.failure("creating a string type")
        }
        return type
    }

    // MARK: Dataspaces

    static func scalarSpace() throws -> hid_t {
        try HDF5Library.check(id: H5Screate(H5S_SCALAR), "creating a dataspace")
    }

    static func vectorSpace(_ count: Int, maximum: Int? = nil) throws -> hid_t {
        var dims = [hsize_t(count)]
        var maxDims = [maximum.map { hsize_t($0) } ?? hsize_t(count)]
        return try HDF5Library.check(id: H5Screate_simple(1, &dims, &maxDims), "creating a dataspace of \(count) elements")
    }

    // MARK: Writing attributes

    private static func writeAttribute(_ location: hid_t, _ name: String, type: hid_t, memoryType: hid_t? = nil,
                                       space: hid_t, _ data: UnsafeRawPointer) throws {
        let attribute = try HDF5Library.check(id: H5Acreate2(location, name, type, space, chdf5_p_default(), chdf5_p_default()),
                                              "creating attribute '\(name)'")
        defer { H5Aclose(attribute) }
        try HDF5Library.check(H5Awrite(attribute, memoryType ?? type, data), "writing attribute '\(name)'")
    }

    /// A scalar attribute stored as `type`, written from `value` of `memoryType`.
    private static func setScalar<T>(_ location: hid_t, _ name: String, type: hid_t, memoryType: hid_t, _ value: T) throws {
        let space = try scalarSpace()
        defer { H5Sclose(space) }
        var v = value
        try withUnsafeBytes(of: &v) { try writeAttribute(location, name, type: type, memoryType: memoryType, space: space, $0.baseAddress!) }
    }

    /// A scalar string attribute. Throws if `value` holds U+0000, which HDF5 cannot store.
    static func setString(_ location: hid_t, _ name: String, _ value: String) throws {
        try setStrings(location, name, [value], scalar: true)
    }

    /// A one-dimensional string attribute (empty arrays allowed).
    static func setStrings(_ location: hid_t, _ name: String, _ values: [String], scalar: Bool = false) throws {
        if let bad = values.first(where: { $0.utf8.contains(0) }) {
            throw HDF5Failure(message: "attribute '\(name)': text \(bad.debugDescription) holds U+0000, which HDF5 strings cannot store")
        }
        let type = try stringType()
        defer { H5Tclose(type) }
        let space = try scalar ? scalarSpace() : vectorSpace(values.count)
        defer { H5Sclose(space) }
        var pointers: [UnsafeMutablePointer<CChar>?] = values.map { strdup($0) }
        defer { pointers.forEach { free($0) } }
        if pointers.isEmpty { pointers.append(nil) }  // a valid buffer address for zero elements
        try pointers.withUnsafeBytes { try writeAttribute(location, name, type: type, space: space, $0.baseAddress!) }
    }

    /// A scalar int64 attribute.
    static func setInt(_ location: hid_t, _ name: String, _ value: Int) throws {
        try setScalar(location, name, type: chdf5_t_std_i64le(), memoryType: chdf5_t_native_int64(), Int64(value))
    }

    /// A one-dimensional int64 attribute (empty arrays allowed).
    static func setInts(_ location: hid_t, _ name: String, _ values: [Int]) throws {
        let space = try vectorSpace(values.count)
        defer { H5Sclose(space) }
        let data = values.map { Int64($0) } + [0]
        try data.withUnsafeBytes {
            try writeAttribute(location, name, type: chdf5_t_std_i64le(), memoryType: chdf5_t_native_int64(), space: space, $0.baseAddress!)
        }
    }

    /// A scalar float64 attribute.
    static func setDouble(_ location: hid_t, _ name: String, _ value: Double) throws {
        try setScalar(location, name, type: chdf5_t_ieee_f64le(), memoryType: chdf5_t_native_double(), value)
    }

    /// A scalar uint8 attribute.
    static func setUInt8(_ location: hid_t, _ name: String, _ value: UInt8) throws {
        try setScalar(location, name, type: chdf5_t_std_u8le(), memoryType: chdf5_t_native_uint8(), value)
    }

    // MARK: Reading attributes

    /// An open attribute with its type class and element count; `rank` is 0 for a scalar.
    private struct OpenAttribute {
        let id: hid_t
        let type: hid_t
        let space: hid_t
        let typeClass: H5T_class_t
        let rank: Int
        let count: Int

        func close() {
            H5Sclose(space)
            H5Tclose(type)
            H5Aclose(id)
        }
    }

    /// Whether `location` has an attribute `name`.
    static func hasAttribute(_ location: hid_t, _ name: String) throws -> Bool {
        let exists = H5Aexists(location, name)
        if exists < 0 { throw HDF5Library.failure("looking up attribute '\(name)'") }
        return exists > 0
    }

    private static func openAttribute(_ location: hid_t, _ name: String) throws -> OpenAttribute {
        guard try hasAttribute(location, name) else { throw HDF5Failure(message: "attribute '\(name)' is missing") }
        let id = try HDF5Library.check(id: H5Aopen(location, name, chdf5_p_default()), "opening attribute '\(name)'")
        let type = H5Aget_type(id)
        let space = H5Aget_space(id)
        guard type >= 0, space >= 0 else {
            if type >= 0 { H5Tclose(type) }
            if space >= 0 { H5Sclose(space) }
            H5Aclose(id)
            throw HDF5Library.failure("reading attribute '\(name)'")
        }
        let spaceClass = H5Sget_simple_extent_type(space)
        var rank = 0
        var count = 0
        switch spaceClass {
        case H5S_SCALAR:
            count = 1
        case H5S_NULL:
            rank = 1
        case H5S_SIMPLE:
            rank = Int(H5Sget_simple_extent_ndims(space))
            count = Int(H5Sget_simple_extent_npoints(space))
        default:
            rank = -1
        }
        return OpenAttribute(id: id, type: type, space: space, typeClass: H5Tget_class(type), rank: rank, count: count)
    }

    private static func describe(_ typeClass: H5T_class_t) -> String {
        switch typeClass {
        case H5T_INTEGER: "an integer"
        case H5T_FLOAT: "a float"
        case H5T_STRING: "a string"
        case H5T_ENUM: "an enum"
        case H5T_COMPOUND: "a compound"
        default: "an unsupported type"
        }
    }

    /// Reads every element of a string attribute (variable- or fixed-length).
    private static func readStrings(_ a: OpenAttribute, _ name: String) throws -> [String] {
        guard a.typeClass == H5T_STRING else { throw HDF5Failure(message: "attribute '\(name)' is \(describe(a.typeClass)), expected a string") }
        if a.count == 0 { return [] }
        let variable = H5Tis_variable_str(a.type)
        if variable > 0 {
            let memoryType = try stringType()
            defer { H5Tclose(memoryType) }
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: a.count)
            try HDF5Library.check(H5Aread(a.id, memoryType, &pointers), "reading attribute '\(name)'")
            defer { for p in pointers where p != nil { H5free_memory(p) } }
            return try pointers.map { p in
                guard let p else { throw HDF5Failure(message: "attribute '\(name)' holds a null string") }
                return try utf8(p, strlen(p), name)
            }
        }
        let size = H5Tget_size(a.type)
        guard size > 0, size < 1 << 30 else { throw HDF5Failure(message: "attribute '\(name)' has a string size of \(size)") }
        let memoryType = try HDF5Library.check(id: H5Tcopy(chdf5_t_c_s1()), "reading attribute '\(name)'")
        defer { H5Tclose(memoryType) }
        H5Tset_size(memoryType, size)
        H5Tset_strpad(memoryType, H5T_STR_NULLPAD)
        var buffer = [CChar](repeating: 0, count: size * a.count)
        try HDF5Library.check(H5Aread(a.id, memoryType, &buffer), "reading attribute '\(name)'")
        return try buffer.withUnsafeBufferPointer { raw in
            try (0..<a.count).map { i in
                let start = raw.baseAddress! + i * size
                let length = (0..<size).first { start[$0] == 0 } ?? size
                return try utf8(start, length, name)
            }
        }
    }

    private static func utf8(_ start: UnsafePointer<CChar>, _ length: Int, _ name: String) throws -> String {
        let bytes = UnsafeRawBufferPointer(start: start, count: length)
        let text = String(decoding: bytes, as: UTF8.self)
        // Decoding repairs invalid sequences; a repaired string differs from its bytes.
        guard text.utf8.elementsEqual(bytes) else {
            throw HDF5Failure(message: "attribute '\(name)' is not valid UTF-8")
        }
        return text
    }

    /// A scalar string attribute.
    static func string(_ location: hid_t, _ name: String) throws -> String {
        let a = try openAttribute(location, name)
        defer { a.close() }
        guard a.rank == 0 else { throw HDF5Failure(message: "attribute '\(name)' is not a scalar") }
        return try readStrings(a, name)[0]
    }

    /// A one-dimensional string attribute.
    static func strings(_ location: hid_t, _ name: String) throws -> [String] {
        let a = try openAttribute(location, name)
        defer { a.close() }
        guard a.rank == 1 else { throw HDF5Failure(message: "attribute '\(name)' is not a one-dimensional array") }
        return try readStrings(a, name)
    }

    private static func readInts(_ a: OpenAttribute, _ name: String) throws -> [Int] {
        if a.count == 0 { return [] }
        guard a.typeClass == H5T_INTEGER else { throw HDF5Failure(message: "attribute '\(name)' is \(describe(a.typeClass)), expected an integer") }
        guard H5Tget_size(a.type) <= 8 else { throw HDF5Failure(message: "attribute '\(name)' is wider than 64 bits") }
        if H5Tget_sign(a.type) == H5T_SGN_NONE && H5Tget_size(a.type) == 8 {
            var values = [UInt64](repeating: 0, count: a.count)
            try HDF5Library.check(H5Aread(a.id, chdf5_t_native_uint64(), &values), "reading attribute '\(name)'")
            return try values.map { v in
                guard v <= UInt64(Int.max) else { throw HDF5Failure(message: "attribute '\(name)' holds \(v), out of range") }
                return Int(v)
            }
        }
        var values = [Int64](repeating: 0, count: a.count)
        try HDF5Library.check(H5Aread(a.id, chdf5_t_native_int64(), &values), "reading attribute '\(name)'")
        return values.map { Int($0) }
    }

    /// A scalar integer attribute.
    static func int(_ location: hid_t, _ name: String) throws -> Int {
        let a = try openAttribute(location, name)
        defer { a.close() }
        guard a.rank == 0 else { throw HDF5Failure(message: "attribute '\(name)' is not a scalar") }
        return try readInts(a, name)[0]
    }

    /// A one-dimensional integer attribute (an empty array of any type reads as `[]`).
    static func ints(_ location: hid_t, _ name: String) throws -> [Int] {
        let a = try openAttribute(location, name)
        defer { a.close() }
        guard a.rank == 1 else { throw HDF5Failure(message: "attribute '\(name)' is not a one-dimensional array") }
        return try readInts(a, name)
    }

    /// A scalar floating-point attribute.
    static func double(_ location: hid_t, _ name: String) throws -> Double {
        let a = try openAttribute(location, name)
        defer { a.close() }
        guard a.rank == 0 else { throw HDF5Failure(message: "attribute '\(name)' is not a scalar") }
        guard a.typeClass == H5T_FLOAT else { throw HDF5Failure(message: "attribute '\(name)' is \(describe(a.typeClass)), expected a float") }
        var value = 0.0
        try HDF5Library.check(H5Aread(a.id, chdf5_t_native_double(), &value), "reading attribute '\(name)'")
        return value
    }

    // MARK: Datasets

    /// How a new dataset is stored.
    struct Storage {
        /// Chunk length in elements, or nil for contiguous storage.
        var chunk: Int?
        /// Deflate level (1-9), or nil for none.
        var deflate: Int?
        /// Whether the shuffle filter precedes deflate.
        var shuffle: Bool = false
        /// Whether the Fletcher-32 checksum filter closes the pipeline (chunked data only).
        var fletcher32: Bool = true
    }

    /// Creates a one-dimensional dataset of `count` elements (growable up to `maximum`,
    /// which requires a chunk). Object times are not recorded, so equal content gives equal
    /// bytes.
    static func createDataset(_ location: hid_t, _ name: String, type: hid_t, count: Int, maximum: Int? = nil,
                              storage: Storage) throws -> hid_t {
        let space = try vectorSpace(count, maximum: maximum)
        defer { H5Sclose(space) }
        let properties = try HDF5Library.check(id: H5Pcreate(chdf5_p_dataset_create()), "creating dataset '\(name)'")
        defer { H5Pclose(properties) }
        try HDF5Library.check(H5Pset_obj_track_times(properties, false), "creating dataset '\(name)'")
        if let chunk = storage.chunk {
            var dims = [hsize_t(chunk)]
            try HDF5Library.check(H5Pset_chunk(properties, 1, &dims), "setting the chunks of '\(name)'")
            if storage.shuffle { try HDF5Library.check(H5Pset_shuffle(properties), "setting the shuffle filter of '\(name)'") }
            if let level = storage.deflate {
                try HDF5Library.check(H5Pset_deflate(properties, UInt32(level)), "setting the deflate filter of '\(name)'")
            }
            // Last in the pipeline: each stored chunk is checksummed as written, and verified
            // before anything else reads it.
            if storage.fletcher32 {
                try HDF5Library.check(H5Pset_fletcher32(properties), "setting the checksum filter of '\(name)'")
            }
        }
        let access = try datasetAccess()
        defer { H5Pclose(access) }
        return try HDF5Library.check(id: H5Dcreate2(location, name, type, space, chdf5_p_default(), properties, access),
                                     "creating dataset '\(name)'")
    }

    /// Dataset access properties with a chunk cache big enough for the chunks a block
    /// spans, so sequential block writes and reads never re-inflate a chunk.
    static func datasetAccess() throws -> hid_t {
        let access = try HDF5Library.check(id: H5Pcreate(chdf5_p_dataset_access()), "creating dataset access properties")
        H5Pset_chunk_cache(access, 521, 8 << 20, 1.0)
        return access
    }

    /// Opens dataset `name` in `location`, or throws naming it as missing.
    static func openDataset(_ location: hid_t, _ name: String) throws -> hid_t {
        let exists = H5Lexists(location, name, chdf5_p_default())
        guard exists > 0 else {
            if exists < 0 { _ = HDF5Library.takeErrorMessage() }
            throw HDF5Failure(message: "dataset '\(name)' is missing")
        }
        let access = try datasetAccess()
        defer { H5Pclose(access) }
        let id = H5Dopen2(location, name, access)
        if id < 0 { throw HDF5Library.failure("opening '\(name)' as a dataset") }
        return id
    }

    /// The dataset's type class, element size and signedness, and its length; throws unless
    /// it is one-dimensional.
    static func describeDataset(_ dataset: hid_t, _ name: String) throws -> (typeClass: H5T_class_t, size: Int, signed: Bool, count: Int) {
        let type = try HDF5Library.check(id: H5Dget_type(dataset), "reading the type of '\(name)'")
        defer { H5Tclose(type) }
        let space = try HDF5Library.check(id: H5Dget_space(dataset), "reading the shape of '\(name)'")
        defer { H5Sclose(space) }
        guard H5Sget_simple_extent_type(space) == H5S_SIMPLE, H5Sget_simple_extent_ndims(space) == 1 else {
            throw HDF5Failure(message: "dataset '\(name)' is not one-dimensional")
        }
        var dims = [hsize_t(0)]
        H5Sget_simple_extent_dims(space, &dims, nil)
        let typeClass = H5Tget_class(type)
        return (typeClass, H5Tget_size(type), typeClass == H5T_INTEGER && H5Tget_sign(type) != H5T_SGN_NONE, Int(dims[0]))
    }

    /// Grows a chunked dataset to `count` elements.
    static func extend(_ dataset: hid_t, to count: Int, _ name: String) throws {
        var dims = [hsize_t(count)]
        try HDF5Library.check(H5Dset_extent(dataset, &dims), "growing '\(name)' to \(count) elements")
    }

    /// Writes `count` elements of `memoryType` from `data` at element `offset`.
    static func write(_ dataset: hid_t, memoryType: hid_t, offset: Int, count: Int, _ data: UnsafeRawPointer, _ name: String) throws {
        guard count > 0 else { return }
        let fileSpace = try HDF5Library.check(id: H5Dget_space(dataset), "writing '\(name)'")
        defer { H5Sclose(fileSpace) }
        var start = [hsize_t(offset)]
        var length = [hsize_t(count)]
        try HDF5Library.check(H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &start, nil, &length, nil), "selecting in '\(name)'")
        let memorySpace = try vectorSpace(count)
        defer { H5Sclose(memorySpace) }
        try HDF5Library.check(H5Dwrite(dataset, memoryType, memorySpace, fileSpace, chdf5_p_default(), data),
                              "writing \(count) elements of '\(name)' at \(offset)")
    }

    /// Reads `count` elements at element `offset` into `data`, converted to `memoryType`.
    static func read(_ dataset: hid_t, memoryType: hid_t, offset: Int, count: Int, into data: UnsafeMutableRawPointer, _ name: String) throws {
        guard count > 0 else { return }
        let fileSpace = try HDF5Library.check(id: H5Dget_space(dataset), "reading '\(name)'")
        defer { H5Sclose(fileSpace) }
        var start = [hsize_t(offset)]
        var length = [hsize_t(count)]
        try HDF5Library.check(H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &start, nil, &length, nil), "selecting in '\(name)'")
        let memorySpace = try vectorSpace(count)
        defer { H5Sclose(memorySpace) }
        try HDF5Library.check(H5Dread(dataset, memoryType, memorySpace, fileSpace, chdf5_p_default(), data),
                              "reading \(count) elements of '\(name)' at \(offset)")
    }

    // MARK: Groups

    /// Group creation properties that do not record object times.
    static func groupCreation() throws -> hid_t {
        let properties = try HDF5Library.check(id: H5Pcreate(chdf5_p_group_create()), "creating group properties")
        H5Pset_obj_track_times(properties, false)
        return properties
    }

    /// Creates group `name` in `location`.
    static func createGroup(_ location: hid_t, _ name: String) throws -> hid_t {
        let properties = try groupCreation()
        defer { H5Pclose(properties) }
        return try HDF5Library.check(id: H5Gcreate2(location, name, chdf5_p_default(), properties, chdf5_p_default()),
                                     "creating group '\(name)'")
    }

    /// Opens group `name` in `location`, or throws naming it as missing.
    static func openGroup(_ location: hid_t, _ name: String) throws -> hid_t {
        let exists = H5Lexists(location, name, chdf5_p_default())
        guard exists > 0 else {
            if exists < 0 { _ = HDF5Library.takeErrorMessage() }
            throw HDF5Failure(message: "group '\(name)' is missing")
        }
        let id = H5Gopen2(location, name, chdf5_p_default())
        if id < 0 { throw HDF5Library.failure("opening '\(name)' as a group") }
        return id
    }

    /// Number of links in a group.
    static func linkCount(_ group: hid_t, _ name: String) throws -> Int {
        var info = H5G_info_t()
        try HDF5Library.check(H5Gget_info(group, &info), "reading group '\(name)'")
        return Int(info.nlinks)
    }
}
