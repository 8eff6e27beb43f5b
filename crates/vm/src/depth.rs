//! A call-depth limit that is the same on every machine.
//!
//! wasmtime's own limit is the native stack, and how much of it a frame takes depends on the
//! machine and the build: a deep recursion could succeed on one worker and trap on another, a
//! dispute by construction. So every module is instrumented before it is compiled (the stack
//! limiter of `wasm-instrument`, as Substrate's contracts pallet did): each call adds the
//! callee's static stack cost (its locals plus its deepest operand stack, in wasm values) to a
//! counter and traps once the counter passes `limits::MAX_STACK_HEIGHT`. That decides, identically
//! everywhere; the native limit stays far above it, as a backstop only.

use crate::{VmError, limits::MAX_STACK_HEIGHT};
use wasm_instrument::parity_wasm::{
    self,
    elements::{ExportEntry, Internal, Module},
};

/// The export under which the instrumented module shows its stack-height counter, so a trap
/// can be told apart as the depth limit.
const HEIGHT_EXPORT: &str = "__phala_stack_height";

/// Instruments `code` with the stack-height counter; a module that cannot be instrumented (a
/// proposal `wasm-instrument` does not parse, an imported global) is refused.
pub fn instrument(code: &[u8]) -> Result<Vec<u8>, VmError> {
    let invalid = |e: &dyn std::fmt::Display| VmError::InvalidModule(e.to_string());
    let module: Module = parity_wasm::deserialize_buffer(code).map_err(|e| invalid(&e))?;
    if module.import_count(parity_wasm::elements::ImportCountType::Global) > 0 {
        return Err(invalid(&"a contract may not import globals"));
    }
    let mut module =
        wasm_instrument::inject_stack_limiter(module, MAX_STACK_HEIGHT).map_err(|e| invalid(&e))?;
    // The limiter appends its counter as the last global.
    let counter = module.globals_space().saturating_sub(1) as u32;
    let exports = module
        .export_section_mut()
        .ok_or_else(|| invalid(&"the module exports nothing"))?;
    exports.entries_mut().push(ExportEntry::new(
        HEIGHT_EXPORT.into(),
        Internal::Global(counter),
    ));
    parity_wasm::serialize(module).map_err(|e| invalid(&e))
}

/// Whether a trapped call stopped at the depth limit: the counter is left above the limit by
/// the call that was refused (every other trap leaves it within).
pub fn exceeded(instance: &wasmtime::Instance, store: &mut impl wasmtime::AsContextMut) -> bool {
    instance
        .get_global(&mut *store, HEIGHT_EXPORT)
        .and_then(|global| global.get(&mut *store).i32())
        .is_some_and(|height| height as u32 > MAX_STACK_HEIGHT)
}
