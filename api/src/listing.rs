//! `berth.v1.ListContainersResponse`, written by hand rather than generated:
//! besides the decoded containers a client reads, it carries containers that
//! an agent encoded before (each the bytes of one `Container` message), so a
//! list of unchanged containers costs a copy of their bytes, not a rebuild
//! and an encoding of every field. On the wire both are the same repeated
//! field 1; a decoder fills `containers` only.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

#[derive(Clone, PartialEq, Default, Debug)]
pub struct ListContainersResponse {
    /// The containers (what a client decodes).
    pub containers: Vec<crate::v1::Container>,
    /// More containers, each already encoded as a `Container` message; sent after `containers`.
    pub encoded: Vec<Bytes>,
}

impl prost::Message for ListContainersResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for c in &self.containers {
            encoding::message::encode(1, c, buf);
        }
        for e in &self.encoded {
            encoding::encode_key(1, WireType::LengthDelimited, buf);
            encoding::encode_varint(e.len() as u64, buf);
            buf.put_slice(e);
        }
    }

    fn merge_field(&mut self, tag: u32, wire_type: WireType, buf: &mut impl Buf, ctx: DecodeContext) -> Result<(), prost::DecodeError> {
        match tag {
            1 => encoding::message::merge_repeated(wire_type, &mut self.containers, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(1, &self.containers)
            + self.encoded.iter().map(|e| encoding::key_len(1) + encoding::encoded_len_varint(e.len() as u64) + e.len()).sum::<usize>()
    }

    fn clear(&mut self) {
        self.containers.clear();
        self.encoded.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Container;
    use prost::Message;

    fn container(id: &str) -> Container {
        Container {
            id: id.into(),
            name: format!("name-{id}"),
            labels: [("k".to_owned(), "v".to_owned())].into(),
            args: vec!["sleep".into(), "60".into()],
            ..Default::default()
        }
    }

    #[test]
    fn encoded_containers_read_back_as_containers() {
        let (a, b, c) = (container("a"), container("b"), container("c"));
        let mixed =
            ListContainersResponse { containers: vec![a.clone()], encoded: vec![b.encode_to_vec().into(), c.encode_to_vec().into()] };
        let plain = ListContainersResponse { containers: vec![a.clone(), b.clone(), c.clone()], encoded: vec![] };
        let bytes = mixed.encode_to_vec();
        assert_eq!(bytes.len(), mixed.encoded_len());
        assert_eq!(bytes, plain.encode_to_vec(), "the same bytes either way");
        let back = ListContainersResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, plain);
        // An unknown field is skipped, as a generated message would.
        let mut more = bytes.clone();
        encoding::string::encode(9, &"later".to_owned(), &mut more);
        assert_eq!(ListContainersResponse::decode(more.as_slice()).unwrap(), plain);
        assert_eq!(ListContainersResponse::decode(&[][..]).unwrap(), ListContainersResponse::default());
    }

    #[test]
    fn the_proto_message_has_only_the_field_written_here() {
        // A field added to the .proto must be added to this hand-written message too.
        let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let msg = fds
            .file
            .iter()
            .filter(|f| f.package() == "berth.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "ListContainersResponse")
            .expect("berth.v1.ListContainersResponse");
        let fields: Vec<(&str, i32)> = msg.field.iter().map(|f| (f.name(), f.number())).collect();
        assert_eq!(fields, [("containers", 1)]);
    }
}
