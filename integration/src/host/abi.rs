//! The proxy-wasm ABI 0.2.1 host functions (module `env`), implemented over [`VmState`].
//!
//! Each function reads its arguments from guest memory, acts on the state, writes results back
//! into memory the guest allocated (`proxy_on_memory_allocate`), and returns a status code as
//! Envoy does. Behaviour follows Envoy and proxy-wasm-cpp-host where the spec is silent
//! (shared-data CAS, header replacement, which buffers exist in which callback).

use super::state::{GrpcCall, HttpCall, LocalReply, LogLine, MetricKind, Pairs, Stream, VmState};
use wasmtime::{bail, format_err as anyhow, Result};
use wasmtime::{Caller, Extern, Linker, Memory};

pub const OK: i32 = 0;
pub const NOT_FOUND: i32 = 1;
pub const BAD_ARGUMENT: i32 = 2;
pub const EMPTY: i32 = 7;
pub const CAS_MISMATCH: i32 = 8;

// Map types.
const REQUEST_HEADERS: i32 = 0;
const REQUEST_TRAILERS: i32 = 1;
const RESPONSE_HEADERS: i32 = 2;
const RESPONSE_TRAILERS: i32 = 3;
const GRPC_INITIAL_METADATA: i32 = 4;
const GRPC_TRAILING_METADATA: i32 = 5;
const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;

// Buffer types.
const REQUEST_BODY: i32 = 0;
const RESPONSE_BODY: i32 = 1;
const HTTP_CALL_RESPONSE_BODY: i32 = 4;
const GRPC_RECEIVE_BUFFER: i32 = 5;
const VM_CONFIGURATION: i32 = 6;
const PLUGIN_CONFIGURATION: i32 = 7;

type C<'a> = Caller<'a, VmState>;

fn memory(caller: &mut C<'_>) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => bail!("module exports no memory"),
    }
}

fn read(caller: &mut C<'_>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = mem.data(&*caller);
    data.get(ptr..ptr + len).map(<[u8]>::to_vec).ok_or_else(|| anyhow!("read out of bounds: {ptr}+{len}"))
}

fn read_str(caller: &mut C<'_>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut C<'_>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let mem = memory(caller)?;
    let ptr = ptr as u32 as usize;
    let data = mem.data_mut(&mut *caller);
    data.get_mut(ptr..ptr + bytes.len())
        .ok_or_else(|| anyhow!("write out of bounds: {ptr}+{}", bytes.len()))?
        .copy_from_slice(bytes);
    Ok(())
}

fn write_u32(caller: &mut C<'_>, ptr: i32, value: u32) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `bytes` into memory the guest allocates, and stores its address and size.
fn return_bytes(caller: &mut C<'_>, bytes: &[u8], ptr_ptr: i32, size_ptr: i32) -> Result<()> {
    let alloc = match caller.get_export("proxy_on_memory_allocate").or_else(|| caller.get_export("malloc")) {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&*caller)?,
        _ => bail!("module exports neither proxy_on_memory_allocate nor malloc"),
    };
    let addr = alloc.call(&mut *caller, bytes.len() as i32)?;
    if addr == 0 && !bytes.is_empty() {
        bail!("guest allocation of {} bytes failed", bytes.len());
    }
    write(caller, addr, bytes)?;
    write_u32(caller, ptr_ptr, addr as u32)?;
    write_u32(caller, size_ptr, bytes.len() as u32)
}

/// proxy-wasm's map serialization: count, (key len, value len) pairs, then NUL-terminated data.
pub fn serialize_pairs(pairs: &Pairs) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

pub fn deserialize_pairs(bytes: &[u8]) -> Result<Pairs> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let u32_at = |at: usize| -> Result<usize> {
        let b = bytes.get(at..at + 4).ok_or_else(|| anyhow!("truncated map"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let mut data = 4 + count * 8;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (klen, vlen) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
        let key = bytes.get(data..data + klen).ok_or_else(|| anyhow!("truncated map key"))?;
        data += klen + 1;
        let value = bytes.get(data..data + vlen).ok_or_else(|| anyhow!("truncated map value"))?;
        data += vlen + 1;
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    Ok(out)
}

/// The stream of the running callback.
fn stream(state: &mut VmState) -> Option<&mut Stream> {
    let id = state.active;
    state.streams.get_mut(&id)
}

/// The header map `map_type` of the running callback, if that map exists there.
fn header_map(state: &mut VmState, map_type: i32) -> Option<&mut Pairs> {
    match map_type {
        HTTP_CALL_RESPONSE_HEADERS | GRPC_INITIAL_METADATA => state.callout.as_mut().map(|c| &mut c.headers),
        HTTP_CALL_RESPONSE_TRAILERS | GRPC_TRAILING_METADATA => state.callout.as_mut().map(|c| &mut c.trailers),
        _ => {
            let s = stream(state)?;
            match map_type {
                REQUEST_HEADERS => Some(&mut s.request_headers),
                REQUEST_TRAILERS => Some(&mut s.request_trailers),
                RESPONSE_HEADERS => Some(&mut s.response_headers),
                RESPONSE_TRAILERS => Some(&mut s.response_trailers),
                _ => None,
            }
        }
    }
}

fn property(state: &mut VmState, path: &str) -> Option<Vec<u8>> {
    if let Some(s) = stream(state) {
        if let Some(v) = s.set_properties.get(path).or_else(|| s.properties.get(path)) {
            return Some(v.clone());
        }
    }
    if let Some(v) = state.properties.get(path) {
        return Some(v.clone());
    }
    match path {
        "plugin_vm_id" => Some(state.vm_id.clone().into_bytes()),
        "plugin_root_id" | "plugin_name" => Some(Vec::new()),
        _ => None,
    }
}

pub fn add_to_linker(linker: &mut Linker<VmState>) -> Result<()> {
    linker.func_wrap("env", "proxy_log", |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
        let message = read_str(&mut c, ptr, len)?;
        let vm = c.data().vm_index;
        c.data().shared.log(LogLine { vm, level: level as u32, message });
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: C<'_>, ret: i32| -> Result<i32> {
        let level = c.data().log_level;
        write_u32(&mut c, ret, level)?;
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: C<'_>, ret: i32| -> Result<i32> {
        let now = c.data().shared.now_ns();
        write(&mut c, ret, &now.to_le_bytes())?;
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: C<'_>, period: i32| -> Result<i32> {
        c.data_mut().tick_period_ms = period as u32;
        Ok(OK)
    })?;

    // --- buffers

    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            let state = c.data_mut();
            let buffer: Option<Vec<u8>> = match kind {
                REQUEST_BODY => stream(state).map(|s| s.request_buffer.clone()),
                RESPONSE_BODY => stream(state).map(|s| s.response_buffer.clone()),
                HTTP_CALL_RESPONSE_BODY => state.callout.as_ref().map(|r| r.body.clone()),
                GRPC_RECEIVE_BUFFER => Some(state.grpc_receive.clone()),
                VM_CONFIGURATION => Some(state.vm_config.clone()),
                PLUGIN_CONFIGURATION => Some(state.plugin_config.clone()),
                _ => None,
            };
            let Some(buffer) = buffer else { return Ok(NOT_FOUND) };
            let start = (start as u32 as usize).min(buffer.len());
            let end = start.saturating_add(max as u32 as usize).min(buffer.len());
            if start == end {
                // Envoy answers an empty range with NotFound; the SDK turns that into None.
                return Ok(NOT_FOUND);
            }
            let slice = buffer[start..end].to_vec();
            return_bytes(&mut c, &slice, ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, size: i32, data_ptr: i32, data_len: i32| -> Result<i32> {
            let data = read(&mut c, data_ptr, data_len)?;
            let Some(s) = stream(c.data_mut()) else { return Ok(NOT_FOUND) };
            let buffer = match kind {
                REQUEST_BODY => &mut s.request_buffer,
                RESPONSE_BODY => &mut s.response_buffer,
                _ => return Ok(BAD_ARGUMENT),
            };
            // Envoy: start 0 with size >= length replaces all; start == length appends;
            // start 0 with size 0 prepends.
            let (start, size) = (start as u32 as usize, size as u32 as usize);
            if start == 0 && size >= buffer.len() {
                *buffer = data;
            } else if start == buffer.len() && size == 0 {
                buffer.extend_from_slice(&data);
            } else if start == 0 && size == 0 {
                let mut joined = data;
                joined.extend_from_slice(buffer);
                *buffer = joined;
            } else if start <= buffer.len() {
                let end = start.saturating_add(size).min(buffer.len());
                buffer.splice(start..end, data);
            } else {
                return Ok(BAD_ARGUMENT);
            }
            Ok(OK)
        },
    )?;

    // --- header maps

    linker.func_wrap("env", "proxy_get_header_map_pairs", |mut c: C<'_>, map: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
        let Some(pairs) = header_map(c.data_mut(), map).map(|m| m.clone()) else { return Ok(NOT_FOUND) };
        let bytes = serialize_pairs(&pairs);
        return_bytes(&mut c, &bytes, ret_ptr, ret_size)?;
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> Result<i32> {
        let pairs = deserialize_pairs(&read(&mut c, ptr, len)?)?;
        let Some(m) = header_map(c.data_mut(), map) else { return Ok(NOT_FOUND) };
        *m = pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        Ok(OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            let key = read_str(&mut c, kptr, klen)?;
            let Some(m) = header_map(c.data_mut(), map) else { return Ok(NOT_FOUND) };
            // Envoy joins repeated headers with ',' for a single-value read.
            let values: Vec<Vec<u8>> =
                m.iter().filter(|(k, _)| k.eq_ignore_ascii_case(&key)).map(|(_, v)| v.clone()).collect();
            if values.is_empty() {
                return Ok(NOT_FOUND);
            }
            let joined = values.join(&b","[..]);
            return_bytes(&mut c, &joined, ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap("env", "proxy_remove_header_map_value", |mut c: C<'_>, map: i32, kptr: i32, klen: i32| -> Result<i32> {
        let key = read_str(&mut c, kptr, klen)?;
        let Some(m) = header_map(c.data_mut(), map) else { return Ok(NOT_FOUND) };
        m.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
        Ok(OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> Result<i32> {
            let key = read_str(&mut c, kptr, klen)?.to_ascii_lowercase();
            let value = read(&mut c, vptr, vlen)?;
            let Some(m) = header_map(c.data_mut(), map) else { return Ok(NOT_FOUND) };
            match m.iter().position(|(k, _)| *k == key) {
                Some(first) => {
                    m[first].1 = value;
                    let mut i = 0;
                    m.retain(|(k, _)| {
                        i += 1;
                        i - 1 == first || *k != key
                    });
                }
                None => m.push((key, value)),
            }
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> Result<i32> {
            let key = read_str(&mut c, kptr, klen)?.to_ascii_lowercase();
            let value = read(&mut c, vptr, vlen)?;
            let Some(m) = header_map(c.data_mut(), map) else { return Ok(NOT_FOUND) };
            m.push((key, value));
            Ok(OK)
        },
    )?;

    // --- properties

    linker.func_wrap("env", "proxy_get_property", |mut c: C<'_>, pptr: i32, plen: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
        let path = read_str(&mut c, pptr, plen)?;
        let Some(value) = property(c.data_mut(), &path) else { return Ok(NOT_FOUND) };
        return_bytes(&mut c, &value, ret_ptr, ret_size)?;
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_set_property", |mut c: C<'_>, pptr: i32, plen: i32, vptr: i32, vlen: i32| -> Result<i32> {
        let path = read_str(&mut c, pptr, plen)?;
        let value = read(&mut c, vptr, vlen)?;
        let state = c.data_mut();
        match stream(state) {
            Some(s) => {
                s.set_properties.insert(path, value);
            }
            None => {
                state.properties.insert(path, value);
            }
        }
        Ok(OK)
    })?;

    // --- shared data and queues

    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kptr: i32, klen: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| -> Result<i32> {
            let key = read_str(&mut c, kptr, klen)?;
            let Some((value, cas)) = c.data().shared.shared_get(&key) else { return Ok(NOT_FOUND) };
            return_bytes(&mut c, &value, ret_ptr, ret_size)?;
            write_u32(&mut c, ret_cas, cas)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kptr: i32, klen: i32, vptr: i32, vlen: i32, cas: i32| -> Result<i32> {
            let key = read_str(&mut c, kptr, klen)?;
            let value = read(&mut c, vptr, vlen)?;
            Ok(if c.data().shared.shared_set(&key, &value, cas as u32) { OK } else { CAS_MISMATCH })
        },
    )?;
    linker.func_wrap("env", "proxy_register_shared_queue", |mut c: C<'_>, nptr: i32, nlen: i32, ret: i32| -> Result<i32> {
        let name = read_str(&mut c, nptr, nlen)?;
        let (vm_id, vm, root) = (c.data().vm_id.clone(), c.data().vm_index, c.data().root_id);
        let token = {
            let mut q = c.data().shared.queues();
            let next = q.next + 1;
            let token = *q.by_name.entry((vm_id, name)).or_insert(next);
            if token == next {
                q.next = next;
            }
            q.items.entry(token).or_default();
            q.owners.insert(token, (vm, root));
            token
        };
        write_u32(&mut c, ret, token)?;
        Ok(OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vptr: i32, vlen: i32, nptr: i32, nlen: i32, ret: i32| -> Result<i32> {
            let vm_id = read_str(&mut c, vptr, vlen)?;
            let name = read_str(&mut c, nptr, nlen)?;
            let token = c.data().shared.queues().by_name.get(&(vm_id, name)).copied();
            let Some(token) = token else { return Ok(NOT_FOUND) };
            write_u32(&mut c, ret, token)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap("env", "proxy_dequeue_shared_queue", |mut c: C<'_>, token: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
        let item = {
            let mut q = c.data().shared.queues();
            match q.items.get_mut(&(token as u32)) {
                None => return Ok(NOT_FOUND),
                Some(items) => items.pop_front(),
            }
        };
        let Some(item) = item else { return Ok(EMPTY) };
        return_bytes(&mut c, &item, ret_ptr, ret_size)?;
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_enqueue_shared_queue", |mut c: C<'_>, token: i32, vptr: i32, vlen: i32| -> Result<i32> {
        let value = read(&mut c, vptr, vlen)?;
        let mut q = c.data().shared.queues();
        match q.items.get_mut(&(token as u32)) {
            None => Ok(NOT_FOUND),
            Some(items) => {
                items.push_back(value);
                Ok(OK)
            }
        }
    })?;

    // --- stream control

    linker.func_wrap("env", "proxy_continue_stream", |mut c: C<'_>, kind: i32| -> Result<i32> {
        let Some(s) = stream(c.data_mut()) else { return Ok(NOT_FOUND) };
        // Resuming lets the buffered body through, as Envoy's continueDecoding/Encoding does.
        match kind {
            0 => {
                s.request_resumed += 1;
                s.request_headers_paused = false;
                let data = std::mem::take(&mut s.request_buffer);
                s.request_body_out.extend_from_slice(&data);
            }
            1 => {
                s.response_resumed += 1;
                s.response_headers_paused = false;
                let data = std::mem::take(&mut s.response_buffer);
                s.response_body_out.extend_from_slice(&data);
            }
            _ => return Ok(BAD_ARGUMENT),
        }
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_close_stream", |mut c: C<'_>, kind: i32| -> Result<i32> {
        let Some(s) = stream(c.data_mut()) else { return Ok(NOT_FOUND) };
        match kind {
            0 => s.request_closed = true,
            1 => s.response_closed = true,
            _ => return Ok(BAD_ARGUMENT),
        }
        Ok(OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>, status: i32, dptr: i32, dlen: i32, bptr: i32, blen: i32, hptr: i32, hlen: i32, grpc: i32| -> Result<i32> {
            let details = read_str(&mut c, dptr, dlen)?;
            let body = read(&mut c, bptr, blen)?;
            let headers = deserialize_pairs(&read(&mut c, hptr, hlen)?)?;
            let Some(s) = stream(c.data_mut()) else { return Ok(NOT_FOUND) };
            if s.local_reply.is_some() {
                bail!("proxy_send_local_response called twice on one stream");
            }
            s.local_reply = Some(LocalReply { status: status as u32, details, body, headers, grpc_status: grpc });
            Ok(OK)
        },
    )?;

    // --- callouts

    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>, uptr: i32, ulen: i32, hptr: i32, hlen: i32, bptr: i32, blen: i32, tptr: i32, tlen: i32, timeout: i32, ret: i32| -> Result<i32> {
            let upstream = read_str(&mut c, uptr, ulen)?;
            let headers = deserialize_pairs(&read(&mut c, hptr, hlen)?)?;
            let body = read(&mut c, bptr, blen)?;
            let trailers = deserialize_pairs(&read(&mut c, tptr, tlen)?)?;
            // Envoy refuses a call without the required pseudo-headers.
            for required in [":method", ":path", ":authority"] {
                if !headers.iter().any(|(k, _)| k == required) {
                    return Ok(BAD_ARGUMENT);
                }
            }
            let state = c.data_mut();
            state.next_token += 1;
            let token = state.next_token;
            let context_id = state.active;
            state.http_calls.push(HttpCall { token, context_id, upstream, headers, body, trailers, timeout_ms: timeout as u32 });
            write_u32(&mut c, ret, token)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: C<'_>,
         uptr: i32,
         ulen: i32,
         sptr: i32,
         slen: i32,
         mptr: i32,
         mlen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         timeout: i32,
         ret: i32|
         -> Result<i32> {
            let upstream = read(&mut c, uptr, ulen)?;
            let service = read_str(&mut c, sptr, slen)?;
            let method = read_str(&mut c, mptr, mlen)?;
            let metadata = deserialize_pairs(&read(&mut c, hptr, hlen)?)?;
            let message = read(&mut c, bptr, blen)?;
            let state = c.data_mut();
            state.next_token += 1;
            let token = state.next_token;
            let context_id = state.active;
            state.grpc_calls.push(GrpcCall { token, context_id, upstream, service, method, metadata, message, timeout_ms: timeout as u32 });
            write_u32(&mut c, ret, token)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |mut c: C<'_>, token: i32| -> Result<i32> {
        let state = c.data_mut();
        let before = state.grpc_calls.len();
        state.grpc_calls.retain(|g| g.token != token as u32);
        Ok(if state.grpc_calls.len() < before { OK } else { NOT_FOUND })
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |mut c: C<'_>, token: i32| -> Result<i32> {
        let state = c.data_mut();
        state.grpc_calls.retain(|g| g.token != token as u32);
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_get_status", |mut c: C<'_>, code_ptr: i32, msg_ptr: i32, msg_size: i32| -> Result<i32> {
        let (code, message) = c.data().grpc_status.clone();
        write_u32(&mut c, code_ptr, code)?;
        return_bytes(&mut c, &message, msg_ptr, msg_size)?;
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_set_effective_context", |mut c: C<'_>, id: i32| -> Result<i32> {
        let state = c.data_mut();
        let id = id as u32;
        if id != state.root_id && !state.streams.contains_key(&id) {
            return Ok(BAD_ARGUMENT);
        }
        state.active = id;
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_done", |mut c: C<'_>| -> Result<i32> {
        c.data_mut().done_called = true;
        Ok(OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>, nptr: i32, nlen: i32, _aptr: i32, _alen: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            let name = read_str(&mut c, nptr, nlen)?;
            let Some(result) = c.data().foreign.get(&name).cloned() else { return Ok(NOT_FOUND) };
            return_bytes(&mut c, &result, ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;

    // --- metrics

    linker.func_wrap("env", "proxy_define_metric", |mut c: C<'_>, kind: i32, nptr: i32, nlen: i32, ret: i32| -> Result<i32> {
        let name = read_str(&mut c, nptr, nlen)?;
        let kind = match kind {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            _ => return Ok(BAD_ARGUMENT),
        };
        let state = c.data_mut();
        state.shared.define_metric(kind, &name);
        let id = match state.metric_names.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                state.metric_names.push((name, kind));
                state.metric_names.len() - 1
            }
        };
        write_u32(&mut c, ret, id as u32)?;
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_increment_metric", |mut c: C<'_>, id: i32, offset: i64| -> Result<i32> {
        let state = c.data_mut();
        let Some((name, kind)) = state.metric_names.get(id as usize).cloned() else { return Ok(NOT_FOUND) };
        if kind == MetricKind::Histogram {
            return Ok(BAD_ARGUMENT);
        }
        state.shared.update_metric(&name, |v| v.wrapping_add_signed(offset));
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_record_metric", |mut c: C<'_>, id: i32, value: i64| -> Result<i32> {
        let state = c.data_mut();
        let Some((name, kind)) = state.metric_names.get(id as usize).cloned() else { return Ok(NOT_FOUND) };
        state.shared.update_metric(&name, |v| if kind == MetricKind::Histogram { v + 1 } else { value as u64 });
        Ok(OK)
    })?;
    linker.func_wrap("env", "proxy_get_metric", |mut c: C<'_>, id: i32, ret: i32| -> Result<i32> {
        let Some((name, _)) = c.data().metric_names.get(id as usize).cloned() else { return Ok(NOT_FOUND) };
        let value = c.data().shared.metric(&name).unwrap_or(0);
        write(&mut c, ret, &value.to_le_bytes())?;
        Ok(OK)
    })?;
    Ok(())
}
