;;; ob-chat-ai-requests.el --- The list of chat-ai requests under way  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; \\[ob-chat-ai-list-requests] lists the chat-ai blocks whose requests
;; are running or waiting in the helper's queue, with their buffer and
;; line: RET jumps to a block, k or c cancels its request, g refreshes.

;;; Code:

;;;; Requirements

(require 'tabulated-list)
(require 'ob-chat-ai-async)

;;;; The list

(defvar ob-chat-ai-requests-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "RET") #'ob-chat-ai-requests-visit)
    (define-key map "k" #'ob-chat-ai-requests-cancel)
    (define-key map "c" #'ob-chat-ai-requests-cancel)
    map)
  "Keys of the list of chat-ai requests.")

(define-derived-mode ob-chat-ai-requests-mode tabulated-list-mode "chat-ai requests"
  "The chat-ai requests running and queued, one line each.
\\{ob-chat-ai-requests-mode-map}"
  (setq tabulated-list-format [("State" 18 t)
                               ("Buffer" 20 t)
                               ("Line" 6 ob-chat-ai--requests-line<)
                               ("Time" 6 nil :right-align t)
                               ("Chars" 7 nil :right-align t)
                               ("Block" 0 nil)])
  (setq tabulated-list-padding 1)
  (add-hook 'tabulated-list-revert-hook #'ob-chat-ai--requests-refresh nil t)
  (tabulated-list-init-header))

;;;###autoload
(defun ob-chat-ai-list-requests ()
  "List the chat-ai requests running and queued, with their blocks.
RET jumps to a request's block, k or c cancels it, g refreshes."
  (interactive)
  (let ((buffer (get-buffer-create "*chat-ai requests*")))
    (with-current-buffer buffer
      (ob-chat-ai-requests-mode)
      (ob-chat-ai--requests-refresh)
      (tabulated-list-print))
    (pop-to-buffer buffer)))

(defun ob-chat-ai--requests-refresh ()
  "Fill the list with the jobs under way, oldest first."
  (setq tabulated-list-entries
        (delq nil (mapcar #'ob-chat-ai--requests-entry (reverse ob-chat-ai--jobs)))))

(defun ob-chat-ai--requests-entry (job)
  "Return the list entry of JOB, or nil when its buffer is gone."
  (let ((buffer (ob-chat-ai--job-buffer job)))
    (when buffer
      (let ((queued (ob-chat-ai--job-queued job)))
        (list job
              (vector (if queued
                          (format "queued, %d ahead" (alist-get 'ahead queued))
                        "running")
                      (buffer-name buffer)
                      (number-to-string
                       (with-current-buffer buffer
                         (line-number-at-pos (ob-chat-ai--job-block job) t)))
                      (format "%.0fs" (- (float-time) (ob-chat-ai--job-started job)))
                      (number-to-string (ob-chat-ai--job-chars job))
                      (ob-chat-ai--requests-label job)))))))

(defun ob-chat-ai--requests-line< (a b)
  "Return non-nil when entry A's line number is below entry B's."
  (< (string-to-number (aref (cadr a) 2)) (string-to-number (aref (cadr b) 2))))

(defun ob-chat-ai--requests-label (job)
  "Return what names JOB's block: its first line of prompt, shortened."
  (let ((line (car (split-string (string-trim (or (ob-chat-ai--job-body job) "")) "\n"))))
    (truncate-string-to-width (or line "") 60 nil nil "…")))

(defun ob-chat-ai--requests-job ()
  "Return the job of the line at point, or signal a user error."
  (let ((job (tabulated-list-get-id)))
    (unless (and job (memq job ob-chat-ai--jobs))
      (user-error "No request under way on this line (g refreshes the list)"))
    job))

(defun ob-chat-ai-requests-visit ()
  "Show the block of the request on this line, point on its #+begin_src line."
  (interactive)
  (let* ((job (ob-chat-ai--requests-job))
         (block (ob-chat-ai--job-block job)))
    (pop-to-buffer (marker-buffer block))
    (when (or (< block (point-min)) (> block (point-max)))
      (widen))
    (goto-char block)))

(defun ob-chat-ai-requests-cancel ()
  "Cancel the request on this line, running or queued."
  (interactive)
  (let ((job (ob-chat-ai--requests-job)))
    (ob-chat-ai-process-cancel (ob-chat-ai--job-request job))
    (revert-buffer)))

(provide 'ob-chat-ai-requests)

;;; ob-chat-ai-requests.el ends here
