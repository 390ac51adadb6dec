package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/consumer"
)

// ConsumerGroups stores the built-in endpoint's consumer groups and their checkpoints
// (internal/consumer implements it on bbolt).
type ConsumerGroups = consumer.GroupStore

// manageGroups is what creating and deleting a consumer group needs. IoT Hub manages groups
// through ARM (its control plane), not with hub policies; among the policies, ServiceConnect
// plus RegistryWrite is held only by iothubowner by default, so readers with the "service"
// policy can list groups, read and checkpoint, but not add or remove groups for others.
const manageGroups = auth.ServiceConnect | auth.RegistryWrite

func (s *Server) consumerGroupRoutes() {
	const base = "/messages/events/consumergroups"
	s.mux.HandleFunc("GET "+base, s.need(auth.ServiceConnect, s.listGroups))
	s.mux.HandleFunc("GET "+base+"/{group}", s.need(auth.ServiceConnect, s.getGroup))
	s.mux.HandleFunc("PUT "+base+"/{group}", s.need(manageGroups, s.putGroup))
	s.mux.HandleFunc("DELETE "+base+"/{group}", s.need(manageGroups, s.deleteGroup))
	s.mux.HandleFunc("PUT "+base+"/{group}/partitions/{partition}/checkpoint", s.need(auth.ServiceConnect, s.commitCheckpoint))
	s.mux.HandleFunc("GET /messages/events/partitions/{partition}", s.need(auth.ServiceConnect, s.getPartition))
}

// maxCheckpointBody bounds a checkpoint commit body ({"sequenceNumber":N}).
const maxCheckpointBody = 4 << 10

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	if !s.haveGroups(w, r) {
		return
	}
	groups, err := s.groups.Groups(r.Context())
	if err != nil {
		s.writeGroupError(w, r, err)
		return
	}
	out := make([]api.ConsumerGroup, 0, len(groups))
	for _, g := range groups {
		out = append(out, api.ConsumerGroup{Name: g.Name, CreatedTime: g.CreatedTime})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	if !s.haveGroups(w, r) {
		return
	}
	name := r.PathValue("group")
	g, err := s.groups.Group(r.Context(), name)
	if err != nil {
		s.writeGroupError(w, r, err)
		return
	}
	cps, err := s.groups.Checkpoints(r.Context(), name)
	if err != nil {
		s.writeGroupError(w, r, err)
		return
	}
	out := api.ConsumerGroup{Name: g.Name, CreatedTime: g.CreatedTime}
	for _, cp := range cps {
		out.Checkpoints = append(out.Checkpoints, apiCheckpoint(cp))
	}
	writeJSON(w, http.StatusOK, out)
}

// putGroup creates a group: 201 when created, 200 when it already existed (idempotent, like a
// PUT of IoT Hub's consumer group resource).
func (s *Server) putGroup(w http.ResponseWriter, r *http.Request) {
	if !s.haveGroups(w, r) {
		return
	}
	g, created, err := s.groups.CreateGroup(r.Context(), r.PathValue("group"))
	if err != nil {
		s.writeGroupError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.logger.Info("consumer group created", "group", g.Name)
	}
	writeJSON(w, status, api.ConsumerGroup{Name: g.Name, CreatedTime: g.CreatedTime})
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) {
	if !s.haveGroups(w, r) {
		return
	}
	if err := s.groups.DeleteGroup(r.Context(), r.PathValue("group")); err != nil {
		s.writeGroupError(w, r, err)
		return
	}
	s.logger.Info("consumer group deleted", "group", r.PathValue("group"))
	w.WriteHeader(http.StatusNoContent)
}

// commitCheckpoint records the last sequence number a group's reader processed in a
// partition. It must be an event the partition has (0 <= n <= last enqueued).
func (s *Server) commitCheckpoint(w http.ResponseWriter, r *http.Request) {
	if !s.haveGroups(w, r) {
		return
	}
	p, err := s.partitionParam(r.PathValue("partition"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	var req api.CheckpointRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxCheckpointBody)).Decode(&req); err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf(`the body is not {"sequenceNumber":<n>}: %v`, err))
		return
	}
	info, err := s.log.Info(p)
	if err != nil {
		s.writeError(w, r, http.StatusInternalServerError, "ServerError", err.Error())
		return
	}
	if req.SequenceNumber < 0 || req.SequenceNumber > info.Last {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf(
			"sequence number %d is not an event of partition %d, whose last event is %d", req.SequenceNumber, p, info.Last))
		return
	}
	cp, err := s.groups.Commit(r.Context(), r.PathValue("group"), p, req.SequenceNumber)
	if err != nil {
		s.writeGroupError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apiCheckpoint(cp))
}

// getPartition describes one partition, like Event Hubs' GetPartitionProperties.
func (s *Server) getPartition(w http.ResponseWriter, r *http.Request) {
	p, err := s.partitionParam(r.PathValue("partition"))
	if err != nil {
		s.writeError(w, r, http.StatusNotFound, "PartitionNotFound", err.Error())
		return
	}
	info, err := s.log.Info(p)
	if err != nil {
		s.writeError(w, r, http.StatusInternalServerError, "ServerError", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, partitionInfo(info))
}

func (s *Server) partitionParam(v string) (int, error) {
	p, err := strconv.Atoi(v)
	if err != nil || p < 0 || p >= s.log.Partitions() {
		return 0, fmt.Errorf("partition %q does not exist: the hub has partitions 0 to %d", v, s.log.Partitions()-1)
	}
	return p, nil
}

// haveGroups answers 501 when the server was built without a consumer group store.
func (s *Server) haveGroups(w http.ResponseWriter, r *http.Request) bool {
	if s.groups == nil {
		s.writeError(w, r, http.StatusNotImplemented, "InvalidOperation", "this hub has no consumer group store")
		return false
	}
	return true
}

// writeGroupError maps a consumer group store error to a status and error code. IoT Hub has no
// codes for these (groups live in ARM there), so they are Tether's, in IoT Hub's form.
func (s *Server) writeGroupError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, "ServerError"
	switch {
	case errors.Is(err, consumer.ErrGroupNotFound):
		status, code = http.StatusNotFound, "ConsumerGroupNotFound"
	case errors.Is(err, consumer.ErrLimitExceeded):
		status, code = http.StatusForbidden, "ConsumerGroupLimitExceeded"
	case errors.Is(err, consumer.ErrDefaultGroup):
		status, code = http.StatusBadRequest, "InvalidOperation"
	case errors.Is(err, consumer.ErrInvalidName), errors.Is(err, consumer.ErrBadPartition), errors.Is(err, consumer.ErrBadCheckpoint):
		status, code = http.StatusBadRequest, "ArgumentInvalid"
	}
	if status == http.StatusInternalServerError {
		s.logger.Error("consumer group request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	s.writeError(w, r, status, code, err.Error())
}

func apiCheckpoint(cp consumer.Checkpoint) api.Checkpoint {
	return api.Checkpoint{Partition: cp.Partition, SequenceNumber: cp.SequenceNumber, UpdatedTime: cp.UpdatedTime}
}

// resumePositions returns, per partition, where a reader of group resuming from its
// checkpoints starts: checkpoint+1. Partitions without a checkpoint are absent.
func (s *Server) resumePositions(ctx context.Context, group string) (map[int]int64, error) {
	cps, err := s.groups.Checkpoints(ctx, group)
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(cps))
	for _, cp := range cps {
		out[cp.Partition] = cp.SequenceNumber + 1
	}
	return out, nil
}
