// Package storage owns the files behind volumes and images on the
// cluster's storage backend: a local directory on each host, or one shared
// NFS export reached through libnfs (nfs:// URLs), so no kernel NFS mount
// is needed.
//
// Volumes (VolumeStore) are qcow2 or raw files made, grown and inspected
// with qemu-img; what qemu-img cannot do over nfs:// (make directories,
// remove files, look names up) a small NFSv3 client (NFSClient) does.
// BlockdevArgs gives the QEMU blockdev description that opens a volume,
// for QMP hot-plug. Image blobs live in the Blob* part of the package.
//
// Every call takes a context and runs under a deadline; errors name the
// path or URL they concern. The package imports nothing of the project:
// it knows files and URLs, not volumes records, hosts or Raft.
package storage
