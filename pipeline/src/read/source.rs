//! Opening an input for reading from a byte offset: local files directly (seek), object-store
//! objects as a streamed range GET handed to the (blocking) reader through a bounded channel, so
//! memory stays bounded whatever the object's size. The channel is tokio's: the download task
//! awaits room in it (never blocking a runtime thread, which would starve heartbeats), the
//! reader, on its blocking thread, waits with `blocking_recv`.

use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;
use futures::StreamExt;

use crate::error::{PipelineError, PipelineResult};
use crate::store;

/// Opens `url` for reading from byte `offset` to its end. Must run on a blocking thread when the
/// URL is remote (it uses the current tokio runtime to drive the download).
pub fn open_from(url: &str, offset: u64, size: u64) -> PipelineResult<Box<dyn Read + Send>> {
    if !store::is_remote(url) {
        let path = url.strip_prefix("file://").unwrap_or(url);
        let mut f = std::fs::File::open(path).map_err(|e| PipelineError::Io { location: url.into(), source: e })?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset)).map_err(|e| PipelineError::Io { location: url.into(), source: e })?;
        }
        return Ok(Box::new(f));
    }
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| PipelineError::Other("remote reads need a tokio runtime".into()))?;
    let loc = store::resolve(url)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    let location = url.to_string();
    handle.spawn(async move {
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(offset..size.max(offset))),
            ..Default::default()
        };
        let result = if offset >= size {
            return;
        } else {
            loc.store.get_opts(&loc.prefix, opts).await
        };
        let mut stream = match result {
            Ok(r) => r.into_stream(),
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(format!("{location}: {e}")))).await;
                return;
            }
        };
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(|e| io::Error::other(format!("{location}: {e}")));
            let stop = item.is_err();
            // A closed receiver means the reader has what it needs.
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    Ok(Box::new(ChannelReader { rx, current: Bytes::new() }))
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
