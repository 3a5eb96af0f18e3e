#pragma once
// A plugin's finding as read off the wire (bus/internal/plugin_event_wire.proto), turned into
// the FindingInput that ValidateFinding checks. Separate from the service so the fuzz target
// exercises exactly the bus's path from bytes to a stored line.
#include "bus/findings.h"
#include "bus/internal/plugin_event_wire.pb.h"

namespace oxg::bus::internal {

// Copies the fields as sent. Metadata beyond `limits.max_metadata_entries + 1` entries is not
// copied (validation refuses the finding either way, and ten thousand keys are not worth a copy).
FindingInput FindingInputFromWire(const FindingWire& wire, const FindingLimits& limits = {});

// After validation: a `flow_id` that looks like a ULID joins the metadata as "flow_id" (in key
// order) unless the plugin set that key itself. Not counted against the plugin's 64 entries.
void AttachFlowId(Finding& finding, std::string_view flow_id);

}  // namespace oxg::bus::internal
