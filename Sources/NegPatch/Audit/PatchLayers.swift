/// How audit groups tensors into layers.
///
/// The rule, applied to the tensor's name split at dots:
/// 1. If a component other than the last is all ASCII digits, the layer is the name up to
///    and including the first such component and its dot: `model.layers.12.mlp.up_proj.weight`
///    is in `model.layers.12.`, `blocks.3.attn.qkv.weight` in `blocks.3.`,
///    `visual.transformer.resblocks.0.ln_1.weight` in `visual.transformer.resblocks.0.`, and
///    `model.layers.1.mlp.experts.7.w1` in `model.layers.1.` (the first index wins).
/// 2. Otherwise the layer is the module holding the tensor, i.e. the name without its last
///    component, ending with a dot: `model.embed_tokens.weight` is in `model.embed_tokens.`,
///    `lm_head.weight` in `lm_head.`.
/// 3. A name without dots is its own layer: `logit_scale`.
///
/// Layers are listed in the order of their first tensor in the patch.
public enum PatchLayers {
    /// The layer of the tensor called `name`, by the rule above.
    public static func layer(of name: String) -> String {
        let components = name.split(separator: ".", omittingEmptySubsequences: false)
        guard components.count > 1 else { return name }
        for i in 0..<(components.count - 1) {
            let component = components[i]
            if !component.isEmpty, component.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
                return components[0...i].joined(separator: ".") + "."
            }
        }
        return components.dropLast().joined(separator: ".") + "."
    }

    /// Groups `names` by layer: each layer with the positions in `names` of its tensors, in
    /// the order of each layer's first tensor.
    public static func group(_ names: [String]) -> [(layer: String, members: [Int])] {
        var order: [String] = []
        var members: [TensorName: [Int]] = [:]
        for (i, name) in names.enumerated() {
            let layer = layer(of: name)
            if members[TensorName(layer)] == nil { order.append(layer) }
            members[TensorName(layer), default: []].append(i)
        }
        return order.map { ($0, members[TensorName($0)]!) }
    }
}

/// A regular expression selecting tensors by name (`--tensors`): a tensor is selected when
/// the expression matches anywhere in its name (anchor with `^` and `$` for a whole-name
/// match). The syntax is Swift's `Regex`, which accepts the usual PCRE/Python forms.
public struct TensorFilter: @unchecked Sendable {
    /// The expression as given.
    public let pattern: String
    private let regex: Regex<AnyRegexOutput>

    /// Compiles `pattern`. Throws `.invalidArgument` naming the pattern when it is not a
    /// valid expression.
    public init(_ pattern: String) throws {
        self.pattern = pattern
        do {
            regex = try Regex(pattern)
        } catch {
            throw NegPatchError(.invalidArgument, file: nil, "--tensors '\(pattern)' is not a valid regular expression: \(error)")
        }
    }

    /// Whether the expression matches somewhere in `name`.
    public func matches(_ name: String) -> Bool {
        (try? regex.firstMatch(in: name)) != nil
    }
}
