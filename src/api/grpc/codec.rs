//! The gRPC message codec: prost's messages, with buffers sized for the small messages most models exchange.
//!
//! tonic's own codec starts every call's decode and encode buffers at 8 KiB. A tabular model's request and answer
//! are a few hundred bytes, and two 8 KiB buffers per call are past the size glibc's allocator serves from its
//! per-thread caches: each took the arena's slow path, which first merges every small chunk freed meanwhile
//! (`docs/performance.md`, "Request ids and the payload log"). Here a call starts at [`FIRST_BUFFER_BYTES`], and a
//! larger message still needs one allocation: the decoder reserves the length the gRPC frame announces, and the
//! encoder reserves the message's encoded length before writing it.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// A call's first buffer, each way: under the 1 KiB from which glibc's allocator leaves its per-thread caches.
const FIRST_BUFFER_BYTES: usize = 512;
/// Streamed answers are handed to the connection once this many bytes are encoded (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(FIRST_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// The codec of every generated service and client (`build.rs` names it): `T` is encoded, `U` decoded.
#[derive(Debug, Clone, Copy)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = MessageEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        MessageEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}

/// Encodes a message into room reserved once for its whole encoded length.
#[derive(Debug, Clone, Copy)]
pub struct MessageEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for MessageEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use futures_util::StreamExt;
    use tonic::codec::Codec as _;

    use super::*;
    use crate::api::grpc::proto::{ModelInferRequest, ModelInferResponse};

    fn response(raw_bytes: usize) -> ModelInferResponse {
        ModelInferResponse {
            model_name: "iris".into(),
            id: "0193a5b4-0000-7000-8000-000000000000".into(),
            raw_output_contents: vec![Bytes::from(vec![7u8; raw_bytes])],
            ..Default::default()
        }
    }

    /// Encodes `message` as tonic does on the server, and returns the gRPC frames written.
    async fn encoded(message: ModelInferResponse) -> Bytes {
        let mut codec = Codec::<ModelInferResponse, ModelInferRequest>::default();
        let source = futures_util::stream::iter([Ok::<_, Status>(message)]);
        let body = tonic::codec::EncodeBody::new_server(codec.encoder(), source, None, Default::default(), None);
        let mut frames = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
        frames.copy_to_bytes(frames.remaining())
    }

    #[tokio::test]
    async fn small_and_large_messages_encode_as_prost_does() {
        for raw in [0, 16, FIRST_BUFFER_BYTES, 3 * FIRST_BUFFER_BYTES + 1, 1 << 20] {
            let message = response(raw);
            let mut frames = encoded(message.clone()).await;
            assert_eq!(frames.get_u8(), 0, "not compressed");
            let length = frames.get_u32() as usize;
            assert_eq!((length, frames.len()), (message.encoded_len(), length), "{raw} raw bytes");
            assert_eq!(frames, message.encode_to_vec(), "{raw} raw bytes");
        }
    }

    #[tokio::test]
    async fn small_and_large_messages_decode_whole() {
        for raw in [0, 16, FIRST_BUFFER_BYTES, 1 << 20] {
            let message = ModelInferRequest {
                model_name: "iris".into(),
                raw_input_contents: vec![Bytes::from(vec![3u8; raw])],
                ..Default::default()
            };
            let mut framed = BytesMut::new();
            framed.put_u8(0);
            framed.put_u32(u32::try_from(message.encoded_len()).unwrap());
            message.encode(&mut framed).unwrap();
            // Delivered in pieces, as the connection's data frames bring it.
            let pieces: Vec<Result<_, Status>> =
                framed.freeze().chunks(4096).map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c)))).collect();
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(pieces));
            let mut codec = Codec::<ModelInferResponse, ModelInferRequest>::default();
            let mut stream = tonic::codec::Streaming::new_request(codec.decoder(), body, None, Some(usize::MAX));
            let decoded = stream.next().await.unwrap().unwrap();
            assert_eq!(decoded, message, "{raw} raw bytes");
            assert!(stream.next().await.is_none());
        }
    }
}
