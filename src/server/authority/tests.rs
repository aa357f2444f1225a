use tokio::io::AsyncReadExt;

use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn request(encoder: &mut Encoder<'_>, authority: &[u8]) -> Vec<u8> {
    encoder.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/inference.GRPCInferenceService/ServerLive"),
        (b":authority", authority),
        (b"content-type", b"application/grpc"),
    ])
}

/// Reads the whole stream through the rewriter, in the small pieces a server's reads may take.
async fn through(input: Vec<u8>) -> Vec<u8> {
    let mut fixed = AuthorityFix::new(&input[..]);
    let mut out = Vec::new();
    let mut piece = [0u8; 7];
    loop {
        let n = fixed.read(&mut piece).await.unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&piece[..n]);
    }
}

/// The frames of a stream after the preface: (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert!(bytes.starts_with(PREFACE));
    bytes = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let length = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        out.push((bytes[3], bytes[4], stream, bytes[FRAME_HEADER..FRAME_HEADER + length].to_vec()));
        bytes = &bytes[FRAME_HEADER + length..];
    }
    out
}

fn authority_of(decoder: &mut Decoder<'_>, block: &[u8]) -> Vec<u8> {
    let headers = decoder.decode(block).unwrap();
    headers.into_iter().find(|(name, _)| name == b":authority").unwrap().1
}

#[tokio::test]
async fn the_authority_of_every_request_is_made_valid_and_other_frames_pass_untouched() {
    let mut client = Encoder::new();
    let mut stream = PREFACE.to_vec();
    stream.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
    let path = b"run%2Finfergate%2Fgrpc.sock";
    stream.extend(frame(HEADERS, END_HEADERS, 1, &request(&mut client, path)));
    let data = frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 5, 1, 2, 3, 4, 5]);
    stream.extend(&data);
    // The second request's authority is an index into the client's table; its block is split over a
    // CONTINUATION, and padded.
    let block = request(&mut client, path);
    let (head, tail) = block.split_at(block.len() / 2);
    let mut padded = vec![3u8];
    padded.extend_from_slice(head);
    padded.extend_from_slice(&[0, 0, 0]);
    stream.extend(frame(HEADERS, PADDED | END_STREAM, 3, &padded));
    stream.extend(frame(CONTINUATION, END_HEADERS, 3, tail));

    let out = through(stream).await;
    let frames = frames(&out);
    let kinds: Vec<(u8, u8, u32)> = frames.iter().map(|(k, f, s, _)| (*k, *f, *s)).collect();
    assert_eq!(
        kinds,
        [(0x4, 0, 0), (HEADERS, END_HEADERS, 1), (0x0, END_STREAM, 1), (HEADERS, END_HEADERS | END_STREAM, 3)]
    );
    assert_eq!(frames[0].3, [0, 3, 0, 0, 0, 100]);
    assert_eq!(frames[2].3, data[FRAME_HEADER..]);
    let mut server = Decoder::new();
    assert_eq!(authority_of(&mut server, &frames[1].3), b"run_2Finfergate_2Fgrpc.sock");
    assert_eq!(authority_of(&mut server, &frames[3].3), b"run_2Finfergate_2Fgrpc.sock");
}

/// A client whose first block needs no fix is passed through untouched from then on, whatever it sends.
#[tokio::test]
async fn a_client_with_a_valid_authority_passes_through_untouched() {
    let mut client = Encoder::new();
    let mut stream = PREFACE.to_vec();
    stream.extend(frame(HEADERS, END_HEADERS, 1, &request(&mut client, b"localhost")));
    stream.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 1, 7]));
    stream.extend(frame(HEADERS, END_HEADERS, 3, &request(&mut client, b"localhost")));
    assert_eq!(through(stream.clone()).await, stream);
}

#[tokio::test]
async fn a_valid_authority_and_a_stream_that_is_not_http2_are_left_alone() {
    let mut client = Encoder::new();
    let mut stream = PREFACE.to_vec();
    stream.extend(frame(HEADERS, END_HEADERS | PRIORITY, 1, &{
        let mut payload = vec![0, 0, 0, 0, 16];
        payload.extend(request(&mut client, b"localhost"));
        payload
    }));
    let out = through(stream).await;
    let frames = frames(&out);
    assert_eq!(frames[0].1, END_HEADERS | PRIORITY);
    assert_eq!(frames[0].3[..5], [0, 0, 0, 0, 16]);
    assert_eq!(authority_of(&mut Decoder::new(), &frames[0].3[5..]), b"localhost");

    let http1 = b"GET /v2/health/ready HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec();
    assert_eq!(through(http1.clone()).await, http1);
}

#[tokio::test]
async fn garbage_in_a_header_block_closes_the_connection() {
    let mut stream = PREFACE.to_vec();
    stream.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
    let mut fixed = AuthorityFix::new(&stream[..]);
    let mut out = Vec::new();
    let error = fixed.read_to_end(&mut out).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    let mut huge = PREFACE.to_vec();
    huge.extend(&frame(HEADERS, 0, 1, &[])[..3]);
    huge[PREFACE.len()..PREFACE.len() + 3].copy_from_slice(&[0xff, 0xff, 0xff]);
    huge.extend([HEADERS, 0, 0, 0, 0, 1]);
    let error = AuthorityFix::new(&huge[..]).read_to_end(&mut Vec::new()).await.unwrap_err();
    assert!(error.to_string().contains("larger than 1 MiB"), "{error}");
}
