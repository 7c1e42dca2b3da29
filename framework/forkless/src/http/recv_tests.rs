use super::*;

/// Copies `bytes` into the buffer as one read would.
fn receive(buf: &mut RecvBuffer, bytes: &[u8], max_head: usize) {
    let spare = buf.spare(max_head);
    spare[..bytes.len()].copy_from_slice(bytes);
    buf.received(bytes.len());
}

const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn a_new_buffer_is_empty_and_of_the_first_size() {
    let mut buf = RecvBuffer::default();
    assert!(buf.is_empty());
    assert!(!buf.has_unpassed());
    assert_eq!(buf.capacity(), RECV_BUFFER);
    assert_eq!(buf.spare(8192).len(), RECV_BUFFER);
}

#[test]
fn received_bytes_wait_for_the_gate_then_go_to_hyper_in_order() {
    let mut buf = RecvBuffer::default();
    receive(&mut buf, b"POST / HTTP/1.1\r\n", 8192);
    assert_eq!(buf.unpassed(), b"POST / HTTP/1.1\r\n");
    assert_eq!(buf.passed(), b"");
    receive(&mut buf, b"Host: x\r\n\r\nbody", 8192);
    buf.pass(28);
    assert_eq!(buf.passed(), b"POST / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(buf.unpassed(), b"body");
    buf.hand_on(5);
    assert_eq!(buf.passed(), b"/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(buf.held(), b"/ HTTP/1.1\r\nHost: x\r\n\r\nbody");
}

#[test]
fn a_head_the_fast_path_takes_is_consumed_and_the_next_one_waits() {
    let mut buf = RecvBuffer::default();
    let two = [HEAD, HEAD].concat();
    receive(&mut buf, &two, 8192);
    buf.take(HEAD.len());
    assert_eq!(buf.passed(), b"");
    assert_eq!(buf.unpassed(), HEAD);
    buf.take(HEAD.len());
    assert!(buf.is_empty());
}

#[test]
fn an_empty_buffer_reads_from_its_front_again() {
    let mut buf = RecvBuffer::default();
    receive(&mut buf, HEAD, 8192);
    buf.take(HEAD.len());
    assert_eq!(buf.spare(8192).len(), RECV_BUFFER);
}

/// A buffer already grown to `size`, empty.
fn grown(size: usize) -> RecvBuffer {
    RecvBuffer {
        buf: vec![0; size],
        ..RecvBuffer::default()
    }
}

#[test]
fn held_bytes_at_the_end_of_a_full_buffer_move_to_the_front() {
    let mut buf = grown(RECV_MAX);
    let mut bytes = vec![b'x'; RECV_MAX - 4];
    bytes.extend_from_slice(b"GET ");
    receive(&mut buf, &bytes, 8192);
    buf.pass(RECV_MAX - 4);
    buf.hand_on(RECV_MAX - 4);
    // At the most already: the held head moves to the front.
    assert_eq!(buf.spare(8192).len(), RECV_MAX - 4);
    assert_eq!(buf.capacity(), RECV_MAX);
    assert_eq!(buf.unpassed(), b"GET ");
    assert_eq!(buf.held(), b"GET ");
}

#[test]
fn a_read_that_fills_the_buffer_doubles_it_up_to_the_most() {
    let mut buf = RecvBuffer::default();
    let mut sizes = vec![];
    for _ in 0..8 {
        let n = buf.spare(8192).len();
        let bytes = vec![b'x'; n];
        receive(&mut buf, &bytes, 8192);
        buf.pass(buf.unpassed().len());
        buf.hand_on(buf.passed().len());
        sizes.push(buf.capacity());
    }
    buf.spare(8192);
    assert_eq!(
        sizes,
        [2048, 4096, 8192, 16384, 32768, 65536, 65536, 65536].map(|n| n.min(RECV_MAX))
    );
    assert_eq!(buf.capacity(), RECV_MAX);
}

#[test]
fn one_long_partial_head_grows_the_buffer_up_to_the_head_limit() {
    let max_head = 200_000;
    let mut buf = grown(RECV_MAX);
    receive(&mut buf, &vec![b'x'; RECV_MAX], max_head);
    // Nothing passed, nothing to move: the head needs more room.
    assert_eq!(buf.spare(max_head).len(), RECV_MAX);
    assert_eq!(buf.capacity(), 2 * RECV_MAX);
    receive(&mut buf, &vec![b'x'; RECV_MAX], max_head);
    buf.spare(max_head);
    assert_eq!(buf.capacity(), max_head + RECV_BUFFER);
    assert_eq!(buf.unpassed().len(), 2 * RECV_MAX);
    // Past the limit the gate refuses the head; the room stays non-empty.
    let n = buf.spare(max_head).len();
    receive(&mut buf, &vec![b'x'; n], max_head);
    assert_eq!(buf.spare(max_head).len(), 1);
}

#[test]
fn a_refused_head_drops_what_was_not_passed() {
    let mut buf = RecvBuffer::default();
    receive(&mut buf, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /bad", 8192);
    buf.pass(HEAD.len());
    buf.drop_unpassed();
    assert!(!buf.has_unpassed());
    assert_eq!(buf.passed(), HEAD);
}

#[test]
fn an_idle_grown_buffer_shrinks_back_but_not_while_it_holds_bytes() {
    let mut buf = RecvBuffer::default();
    let n = buf.spare(8192).len();
    receive(&mut buf, &vec![b'x'; n], 8192);
    buf.spare(8192);
    assert_eq!(buf.capacity(), 2 * RECV_BUFFER);
    buf.shrink();
    assert_eq!(buf.capacity(), 2 * RECV_BUFFER, "still holds bytes");
    buf.pass(n);
    buf.hand_on(n);
    buf.shrink();
    assert_eq!(buf.capacity(), RECV_BUFFER);
    assert!(buf.is_empty());
}

#[test]
fn scratch_is_the_whole_buffer_and_forgets_what_it_held() {
    let mut buf = RecvBuffer::default();
    receive(&mut buf, HEAD, 8192);
    assert_eq!(buf.scratch().len(), RECV_BUFFER);
    assert!(buf.is_empty());
}
