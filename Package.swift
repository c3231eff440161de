// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "NegPatch",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "NegPatch", targets: ["NegPatch"]),
        .executable(name: "negpatch", targets: ["negpatch"]),
        // The C ABI as a shared library (libNegPatchABI.so), for the Python package and any
        // C caller; header: Sources/CNegPatchABI/include/negpatch.h.
        .library(name: "NegPatchABI", type: .dynamic, targets: ["NegPatchABI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // 4.x imports FoundationEssentials on Linux, not Foundation: without ICU, libNegPatchABI.so
        // built with -static-stdlib is 17 MB instead of 61 MB (stripped).
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .systemLibrary(
            name: "CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        .target(name: "CLinux"),
        .target(
            name: "NegPatch",
            dependencies: ["CZstd", "CHDF5", "CLinux", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // The header of the C ABI and its deallocators.
        .target(name: "CNegPatchABI"),
        // The C ABI: @_cdecl functions over the library's readers and Patcher.
        .target(
            name: "NegPatchABI",
            dependencies: ["NegPatch", "CNegPatchABI"]
        ),
        .executableTarget(
            name: "negpatch",
            dependencies: [
                "NegPatch",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "negpatch-bench-decoder",
            dependencies: ["NegPatch"],
            path: "tools/bench/decoder"
        ),
        .testTarget(
            name: "NegPatchTests",
            dependencies: ["NegPatch", "CHDF5"]
        ),
    ]
)
