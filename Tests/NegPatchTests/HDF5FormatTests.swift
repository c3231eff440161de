import Testing
@testable import NegPatch
