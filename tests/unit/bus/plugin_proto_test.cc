// The plugin protocol's wire layout (contract §10): every field of the published protocol keeps
// its number and type, the additions sit on new numbers, and a hello encodes to the exact bytes
// the Python stubs produce (tests/unit/bus/plugin_proto_test.py checks the same bytes).
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/unknown_field_set.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "oxg/common.pb.h"
#include "oxg/plugin_bus.grpc.pb.h"
#include "oxg/plugin_bus.pb.h"
#include "bus/internal/plugin_event_wire.pb.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

struct Field {
  const Descriptor* message;
  std::string name;
  int number;
  FieldDescriptor::Type type;
  bool repeated;
};

std::vector<Field> ContractFields() {
  using FD = FieldDescriptor;
  const Descriptor* hello = oxg::plugin_bus::PluginHello::descriptor();
  const Descriptor* event = oxg::plugin_bus::PluginEvent::descriptor();
  const Descriptor* request = oxg::plugin_bus::PluginCapabilityRequest::descriptor();
  const Descriptor* grant = oxg::plugin_bus::PluginCapabilityGrant::descriptor();
  const Descriptor* host = oxg::plugin_bus::HostEvent::descriptor();
  const Descriptor* flow = oxg::common::FlowEvent::descriptor();
  const Descriptor* finding = oxg::common::Finding::descriptor();
  return {
      // The published protocol.
      {event, "hello", 1, FD::TYPE_MESSAGE, false},
      {event, "finding", 2, FD::TYPE_MESSAGE, false},
      {hello, "auth_token", 1, FD::TYPE_STRING, false},
      {hello, "plugin_name", 2, FD::TYPE_STRING, false},
      {hello, "pid", 3, FD::TYPE_INT32, false},
      {hello, "subscriptions", 4, FD::TYPE_STRING, true},
      {hello, "capabilities", 5, FD::TYPE_STRING, true},
      {hello, "capability_token", 6, FD::TYPE_STRING, false},
      {request, "auth_token", 1, FD::TYPE_STRING, false},
      {request, "plugin_name", 2, FD::TYPE_STRING, false},
      {request, "capabilities", 3, FD::TYPE_STRING, true},
      {grant, "capability_token", 1, FD::TYPE_STRING, false},
      {grant, "expires_at_unix", 2, FD::TYPE_INT64, false},
      {host, "core_version", 1, FD::TYPE_STRING, false},
      {host, "flow_event", 2, FD::TYPE_MESSAGE, false},
      {flow, "type", 1, FD::TYPE_ENUM, false},
      {flow, "data", 2, FD::TYPE_BYTES, false},
      {finding, "type", 1, FD::TYPE_STRING, false},
      {finding, "message", 2, FD::TYPE_STRING, false},
      {finding, "severity", 3, FD::TYPE_ENUM, false},
      {finding, "metadata", 4, FD::TYPE_MESSAGE, true},  // map<string,string>
      // Additions.
      {event, "goodbye", 3, FD::TYPE_MESSAGE, false},
      {event, "traceparent", 4, FD::TYPE_STRING, false},
      {host, "goodbye", 3, FD::TYPE_MESSAGE, false},
      {flow, "flow_id", 3, FD::TYPE_STRING, false},
      {flow, "sequence", 4, FD::TYPE_UINT64, false},
      {flow, "variant", 5, FD::TYPE_ENUM, false},
      {flow, "captured_at_unix_nano", 6, FD::TYPE_INT64, false},
      {flow, "traceparent", 7, FD::TYPE_STRING, false},
      {flow, "raw_body_bytes", 8, FD::TYPE_UINT64, false},
      {flow, "raw_body_truncated", 9, FD::TYPE_BOOL, false},
      {flow, "scheme", 10, FD::TYPE_STRING, false},
      {finding, "target", 5, FD::TYPE_STRING, false},
      {finding, "evidence", 6, FD::TYPE_STRING, false},
      {finding, "flow_id", 7, FD::TYPE_STRING, false},
  };
}

TEST(PluginProtoTest, EveryContractFieldHasItsNumberAndType) {
  for (const Field& f : ContractFields()) {
    const FieldDescriptor* d = f.message->FindFieldByName(f.name);
    ASSERT_NE(d, nullptr) << f.message->full_name() << "." << f.name;
    EXPECT_EQ(d->number(), f.number) << d->full_name();
    EXPECT_EQ(d->type(), f.type) << d->full_name();
    EXPECT_EQ(d->is_repeated(), f.repeated) << d->full_name();
  }
}

TEST(PluginProtoTest, NoFieldBeyondTheContract) {
  // A field added without a contract line would silently widen the protocol.
  std::vector<const Descriptor*> messages = {
      oxg::plugin_bus::PluginHello::descriptor(), oxg::plugin_bus::PluginEvent::descriptor(),
      oxg::plugin_bus::PluginCapabilityRequest::descriptor(),
      oxg::plugin_bus::PluginCapabilityGrant::descriptor(),
      oxg::plugin_bus::HostEvent::descriptor(), oxg::common::FlowEvent::descriptor(),
      oxg::common::Finding::descriptor()};
  const std::vector<Field> fields = ContractFields();
  for (const Descriptor* m : messages) {
    for (int i = 0; i < m->field_count(); ++i) {
      const FieldDescriptor* d = m->field(i);
      bool listed = false;
      for (const Field& f : fields) listed |= f.message == m && f.name == d->name();
      EXPECT_TRUE(listed) << d->full_name() << " is not in the contract table";
    }
  }
}

TEST(PluginProtoTest, EnumsKeepTheirValues) {
  using oxg::common::FlowEvent;
  EXPECT_EQ(FlowEvent::FLOW_EVENT_UNSPECIFIED, 0);
  EXPECT_EQ(FlowEvent::FLOW_REQUEST, 1);
  EXPECT_EQ(FlowEvent::FLOW_RESPONSE, 2);
  EXPECT_EQ(oxg::common::SEVERITY_UNSPECIFIED, 0);
  EXPECT_EQ(oxg::common::INFO, 1);
  EXPECT_EQ(oxg::common::LOW, 2);
  EXPECT_EQ(oxg::common::MEDIUM, 3);
  EXPECT_EQ(oxg::common::HIGH, 4);
  EXPECT_EQ(oxg::common::CRITICAL, 5);
}

TEST(PluginProtoTest, ServiceMethods) {
  const auto* service = oxg::plugin_bus::PluginBus::service_full_name();
  EXPECT_STREQ(service, "oxg.plugin_bus.PluginBus");
  const auto* d = oxg::plugin_bus::PluginEvent::descriptor()->file()->FindServiceByName(
      "PluginBus");
  ASSERT_NE(d, nullptr);
  const auto* stream = d->FindMethodByName("EventStream");
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(stream->client_streaming());
  EXPECT_TRUE(stream->server_streaming());
  EXPECT_EQ(stream->input_type()->full_name(), "oxg.plugin_bus.PluginEvent");
  EXPECT_EQ(stream->output_type()->full_name(), "oxg.plugin_bus.HostEvent");
  const auto* grant = d->FindMethodByName("GrantCapabilities");
  ASSERT_NE(grant, nullptr);
  EXPECT_FALSE(grant->client_streaming());
  EXPECT_FALSE(grant->server_streaming());
}

// The same hello as plugin_proto_test.py; both must produce these bytes.
constexpr char kHelloHex[] =
    "0a2b0a01741201701807220c464c4f575f524551554553542a104341505f464c4f575f494e5350454354320163";

TEST(PluginProtoTest, HelloBytesMatchThePythonStubs) {
  oxg::plugin_bus::PluginEvent event;
  auto* hello = event.mutable_hello();
  hello->set_auth_token("t");
  hello->set_plugin_name("p");
  hello->set_pid(7);
  hello->add_subscriptions("FLOW_REQUEST");
  hello->add_capabilities("CAP_FLOW_INSPECT");
  hello->set_capability_token("c");
  std::string bytes;
  ASSERT_TRUE(event.SerializeToString(&bytes));
  std::string hex;
  for (unsigned char c : bytes) {
    static const char kDigits[] = "0123456789abcdef";
    hex.push_back(kDigits[c >> 4]);
    hex.push_back(kDigits[c & 15]);
  }
  EXPECT_EQ(hex, kHelloHex);
}

TEST(PluginProtoTest, OlderPeersReadThePublishedFieldsAndSkipTheAdditions) {
  // An older plugin's FlowEvent knows fields 1 and 2 only: build that message from a descriptor
  // and parse a flow event carrying every addition with it.
  google::protobuf::FileDescriptorProto file;
  file.set_name("published_flow.proto");
  file.set_package("published");
  file.set_syntax("proto3");
  auto* message = file.add_message_type();
  message->set_name("FlowEvent");
  auto* type = message->add_field();
  type->set_name("type");
  type->set_number(1);
  type->set_type(google::protobuf::FieldDescriptorProto::TYPE_INT32);  // enums are varints
  type->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
  auto* data = message->add_field();
  data->set_name("data");
  data->set_number(2);
  data->set_type(google::protobuf::FieldDescriptorProto::TYPE_BYTES);
  data->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
  google::protobuf::DescriptorPool pool;
  const google::protobuf::FileDescriptor* fd = pool.BuildFile(file);
  ASSERT_NE(fd, nullptr);
  google::protobuf::DynamicMessageFactory factory(&pool);
  std::unique_ptr<google::protobuf::Message> older(
      factory.GetPrototype(fd->FindMessageTypeByName("FlowEvent"))->New());

  oxg::common::FlowEvent flow;
  flow.set_type(oxg::common::FlowEvent::FLOW_RESPONSE);
  flow.set_data("HTTP/1.1 200 OK\r\n\r\n");
  flow.set_flow_id("01J0000000000000000000000A");
  flow.set_sequence(42);
  flow.set_variant(oxg::common::FLOW_VARIANT_RAW);
  flow.set_captured_at_unix_nano(1);
  flow.set_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  flow.set_raw_body_bytes(7);
  flow.set_raw_body_truncated(true);
  ASSERT_TRUE(older->ParseFromString(flow.SerializeAsString()));
  const auto* reflection = older->GetReflection();
  const Descriptor* d = older->GetDescriptor();
  EXPECT_EQ(reflection->GetInt32(*older, d->FindFieldByName("type")), 2);
  EXPECT_EQ(reflection->GetString(*older, d->FindFieldByName("data")), "HTTP/1.1 200 OK\r\n\r\n");
  // The seven additions are kept as unknown fields, not misread as known ones.
  EXPECT_EQ(reflection->GetUnknownFields(*older).field_count(), 7);
}

}  // namespace

// The bus reads plugin events through a mirror with `bytes` in place of `string`
// (src/bus/internal/plugin_event_wire.proto). It must see every field of the real message, on
// the same number, with a wire-compatible type, so nothing a plugin sends is misread.
TEST(PluginProtoTest, TheBusMirrorReadsEveryPluginEventField) {
  using FD = FieldDescriptor;
  const std::pair<const Descriptor*, const Descriptor*> pairs[] = {
      {oxg::plugin_bus::PluginEvent::descriptor(), oxg::bus::internal::PluginEventWire::descriptor()},
      {oxg::plugin_bus::PluginHello::descriptor(), oxg::bus::internal::HelloWire::descriptor()},
      {oxg::plugin_bus::PluginGoodbye::descriptor(), oxg::bus::internal::GoodbyeWire::descriptor()},
      {oxg::common::Finding::descriptor(), oxg::bus::internal::FindingWire::descriptor()},
  };
  for (const auto& [real, mirror] : pairs) {
    ASSERT_EQ(real->field_count(), mirror->field_count()) << real->full_name();
    for (int i = 0; i < real->field_count(); ++i) {
      const FD* r = real->field(i);
      const FD* m = mirror->FindFieldByNumber(r->number());
      ASSERT_NE(m, nullptr) << r->full_name();
      EXPECT_EQ(r->name(), m->name()) << r->full_name();
      EXPECT_EQ(r->is_repeated() || r->is_map(), m->is_repeated()) << r->full_name();
      EXPECT_EQ(r->containing_oneof() != nullptr, m->containing_oneof() != nullptr)
          << r->full_name();
      const bool same_wire =
          r->type() == m->type() || (r->type() == FD::TYPE_STRING && m->type() == FD::TYPE_BYTES) ||
          (r->type() == FD::TYPE_ENUM && m->type() == FD::TYPE_INT32);
      EXPECT_TRUE(same_wire) << r->full_name();
    }
  }
}

TEST(PluginProtoTest, TheBusMirrorKeepsInvalidUtf8AndDuplicateMetadataKeys) {
  oxg::bus::internal::PluginEventWire sent;
  sent.set_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  auto* finding = sent.mutable_finding();
  finding->set_type("x");
  finding->set_message(std::string("bad \xff\xfe utf-8"));
  finding->set_severity(3);
  for (int i = 0; i < 2; ++i) {
    auto* entry = finding->add_metadata();
    entry->set_key("k");
    entry->set_value(std::to_string(i));
  }
  // A real Finding's map merges the duplicate key, and protobuf refuses the invalid UTF-8;
  // the mirror sees both as they were sent.
  oxg::bus::internal::PluginEventWire read;
  ASSERT_TRUE(read.ParseFromString(sent.SerializeAsString()));
  ASSERT_EQ(read.event_case(), oxg::bus::internal::PluginEventWire::kFinding);
  EXPECT_EQ(read.finding().message(), "bad \xff\xfe utf-8");
  ASSERT_EQ(read.finding().metadata_size(), 2);
  EXPECT_EQ(read.finding().metadata(1).value(), "1");

  oxg::plugin_bus::PluginEvent strict;
  EXPECT_FALSE(strict.ParseFromString(sent.SerializeAsString()));

  // And a well-formed real event reads the same through the mirror.
  oxg::plugin_bus::PluginEvent real;
  real.mutable_hello()->set_plugin_name("seer");
  real.mutable_hello()->add_subscriptions("FLOW_RESPONSE");
  real.mutable_hello()->set_pid(42);
  ASSERT_TRUE(read.ParseFromString(real.SerializeAsString()));
  EXPECT_EQ(read.hello().plugin_name(), "seer");
  EXPECT_EQ(read.hello().pid(), 42);
  ASSERT_EQ(read.hello().subscriptions_size(), 1);
}
