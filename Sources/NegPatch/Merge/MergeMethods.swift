/// Parameters that merge methods read from the command line or a program.
public struct MergeParameters: Sendable {
    /// `consensus`: how many task vectors must share the majority sign.
    public var minAgree: Int?
    /// `task-arithmetic`: one weight per model.
    public var weights: [Double]?
    /// `ties`, `magnitude-prune`: the fraction of each task vector kept by magnitude.
    public var density: Double?
    /// `dare`, `dare-ties`: the drop probability.
    public var drop: Double?
    /// `dare`, `dare-ties`: the random seed.
    public var seed: UInt64?

    /// No parameters: every method's defaults.
    public init() {}
}

/// The registry of merge methods, looked up by name.
public enum MergeMethods {
    /// A registered method: its name, a one-line description, and how to build it.
    public struct Entry: Sendable {
        /// The name `--method` takes.
        public let name: String
        /// What it does, in one line.
        public let summary: String
        /// The parameters it reads, by option name (`density`, `min-agree`, ...): any other
        /// parameter given with this method is a mistake the command line refuses.
        public let parameters: [String]
        /// Builds the method for `n` models.
        public let make: @Sendable (_ parameters: MergeParameters, _ n: Int) throws -> any MergeMethod

        init(name: String, summary: String, parameters: [String] = [],
             make: @escaping @Sendable (_ parameters: MergeParameters, _ n: Int) throws -> any MergeMethod) {
            self.name = name
            self.summary = summary
            self.parameters = parameters
            self.make = make
        }
    }

    /// Every method, in the order `--help` lists them. A new method is one new type and one
    /// entry here.
    public static let all: [Entry] = [
        Entry(name: "negmerge", summary: "keep elements where all n task vectors agree in sign; their mean") { _, _ in
            SignConsensus.negMerge
        },
        Entry(name: "consensus", summary: "keep elements where at least --min-agree share the majority sign; their mean",
              parameters: ["min-agree"]) { p, n in
            SignConsensus.relaxed(minAgree: p.minAgree ?? (n / 2 + 1))
        },
        Entry(name: "uniform", summary: "mean of all task vectors") { _, _ in UniformMerge() },
        Entry(name: "task-arithmetic", summary: "weighted sum, --weights w1,...,wn (default all 1)", parameters: ["weights"]) { p, _ in
            TaskArithmetic(weights: p.weights)
        },
        Entry(name: "ties", summary: "TIES: per-tensor top --density trim, elected sign, disjoint mean", parameters: ["density"]) { p, _ in
            TiesMerging(density: p.density ?? 0.2)
        },
        Entry(name: "magmax", summary: "per element, the value of largest magnitude") { _, _ in MagMax() },
        Entry(name: "dare", summary: "drop with probability --drop, rescale by 1/(1-p), mean; --seed", parameters: ["drop", "seed"]) { p, _ in
            Dare(drop: p.drop ?? 0.9, seed: p.seed ?? 0)
        },
        Entry(name: "dare-ties", summary: "DARE's drop and rescale (--drop, --seed), then TIES' elected sign and disjoint mean",
              parameters: ["drop", "seed"]) { p, _ in
            DareTies(drop: p.drop ?? 0.9, seed: p.seed ?? 0)
        },
        Entry(name: "magnitude-prune", summary: "per-tensor top --density trim by magnitude, then the mean of all n",
              parameters: ["density"]) { p, _ in
            MagnitudePrune(density: p.density ?? 0.2)
        },
    ]

    /// The names of all methods.
    public static var names: [String] { all.map(\.name) }

    /// The entry of the method called `name`, if there is one.
    public static func entry(_ name: String) -> Entry? {
        all.first { $0.name == name }
    }

    /// Builds the method called `name` for `n` models.
    public static func make(_ name: String, parameters: MergeParameters, modelCount n: Int) throws -> any MergeMethod {
        guard let entry = entry(name) else {
            throw NegPatchError(.invalidArgument, file: nil, "unknown merge method '\(name)' (known: \(names.joined(separator: ", ")))")
        }
        let method = try entry.make(parameters, n)
        try method.validate(modelCount: n)
        return method
    }
}
