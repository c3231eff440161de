/// The parts of a PEFT `adapter_config.json` that define a LoRA adapter's update, read
/// once and checked: anything that would make the update other than `scaling * B @ A`
/// (DoRA, LoHa, LoKr, IA3, bias training, ...) is refused here with one clear error.
public struct LoraAdapterConfig: Sendable {
    /// The default rank `r`.
    public let rank: Int
    /// The default `lora_alpha`.
    public let alpha: Double
    /// `use_rslora`: scaling `alpha / sqrt(r)` instead of `alpha / r`.
    public let useRsLora: Bool
    /// `fan_in_fan_out`: the adapted weights are stored transposed (GPT-2's Conv1D).
    public let fanInFanOut: Bool
    /// `rank_pattern`: per-module ranks, pattern to rank, in file order.
    public let rankPattern: [(pattern: String, value: Int)]
    /// `alpha_pattern`: per-module alphas, pattern to alpha, in file order.
    public let alphaPattern: [(pattern: String, value: Double)]

    /// Parses and checks the config at `path`.
    public init(path: String) throws {
        let file = try MappedFile(path: path)
        let json: JSONValue
        do {
            json = try StrictJSON.parse(file.bytes)
        } catch {
            throw NegPatchError(.malformed, file: path, "not a valid adapter config: \(error)")
        }
        func bad(_ message: String) -> NegPatchError { NegPatchError(.malformed, file: path, message) }
        func unsupported(_ message: String) -> NegPatchError { NegPatchError(.invalidArgument, file: path, "unsupported adapter: \(message)") }
        guard case .object = json else { throw bad("the adapter config is not a JSON object") }
        func flag(_ key: String) throws -> Bool {
            switch json[key] {
            case nil, .null?: return false
            case let .bool(value)?: return value
            case let other?: throw bad("'\(key)' is a \(other.kind), expected a boolean")
            }
        }
        guard let peftType = json["peft_type"]?.string else { throw bad("'peft_type' is missing (not a PEFT adapter config)") }
        guard peftType == "LORA" else {
            throw unsupported("peft_type '\(peftType)' (only LORA adapters are merged; LoHa, LoKr, IA3 and the others update weights differently)")
        }
        if try flag("use_dora") { throw unsupported("use_dora (DoRA rescales the weight by a learned magnitude: its update is not scaling * B @ A)") }
        if let bias = json["bias"], bias != .null, bias.string != "none" {
            throw unsupported("bias '\(bias.string ?? bias.kind)' (trained biases are not merged; only bias 'none' is)")
        }
        if try flag("lora_bias") { throw unsupported("lora_bias (a trained bias on lora_B is not merged)") }
        if let replication = json["layer_replication"], replication != .null {
            throw unsupported("layer_replication (the adapted model has other layers than the base)")
        }
        guard let rank = json["r"]?.nonNegativeInt, rank >= 1 else { throw bad("'r' is not a positive integer") }
        guard let alpha = json["lora_alpha"]?.double, alpha.isFinite else { throw bad("'lora_alpha' is not a finite number") }
        self.rank = rank
        self.alpha = alpha
        useRsLora = try flag("use_rslora")
        fanInFanOut = try flag("fan_in_fan_out")
        func pattern<T>(_ key: String, _ value: (JSONValue) -> T?) throws -> [(pattern: String, value: T)] {
            switch json[key] {
            case nil, .null?: return []
            case let .object(entries)?:
                return try entries.map { entry in
                    guard let v = value(entry.value) else { throw bad("'\(key)' entry '\(entry.key)' is not a valid value") }
                    return (entry.key, v)
                }
            case let other?: throw bad("'\(key)' is a \(other.kind), expected an object")
            }
        }
        rankPattern = try pattern("rank_pattern") { $0.nonNegativeInt.flatMap { $0 >= 1 ? $0 : nil } }
        alphaPattern = try pattern("alpha_pattern") { $0.double.flatMap { $0.isFinite ? $0 : nil } }
        for (key, _) in rankPattern + alphaPattern.map({ ($0.pattern, 0) }) {
            guard (try? Regex(key)) != nil else { throw bad("pattern '\(key)' is not a valid regular expression") }
        }
    }

    /// The rank and scaling of the module called `module` (its name in the base model):
    /// the first `rank_pattern` / `alpha_pattern` key that matches the end of the name at
    /// a component boundary (PEFT's rule: `re.match(r"(.*\.)?(KEY)$", module)`), else `r`
    /// and `lora_alpha`.
    /// Scaling is `alpha / r`, or `alpha / sqrt(r)` with `use_rslora`, in float64.
    public func rankAndScaling(module: String) -> (rank: Int, scaling: Double) {
        func matches(_ key: String) -> Bool {
            guard let regex = try? Regex("(.*\\.)?(\(key))$") else { return false }
            return (try? regex.wholeMatch(in: module)) != nil
        }
        let r = rankPattern.first { matches($0.pattern) }?.value ?? rank
        let a = alphaPattern.first { matches($0.pattern) }?.value ?? alpha
        return (r, useRsLora ? a / Double(r).squareRoot() : a / Double(r))
    }
}
